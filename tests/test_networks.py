"""Network shapes, ranges, parameter counts and safe serialisation (run on TF and on JAX)."""

import keras
import numpy as np
import pytest

from age_cgan.networks import (
    build_discriminator,
    build_encoder,
    build_face_recognizer,
    build_generator,
)

RNG = np.random.default_rng(0)


def _ages(categories, num_ages=6):
    return np.eye(num_ages, dtype=np.float32)[categories]


def _faces(n, size=64):
    return RNG.uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


def test_tutorial_parameter_counts():
    assert build_encoder().count_params() == 18_287_268
    assert build_generator().count_params() == 34_885_251
    assert build_discriminator().count_params() == 1_569_665


def test_generator_shape_and_tanh_range():
    g = build_generator()
    z = RNG.normal(size=(3, 100)).astype(np.float32) * 50  # large z saturates tanh
    out = keras.ops.convert_to_numpy(g([z, _ages([0, 3, 5])]))
    assert out.shape == (3, 64, 64, 3)
    assert out.min() >= -1.0 and out.max() <= 1.0


def test_encoder_and_discriminator_shapes():
    x = _faces(2)
    assert tuple(build_encoder()(x).shape) == (2, 100)
    p = keras.ops.convert_to_numpy(build_discriminator()([x, _ages([1, 2])]))
    assert p.shape == (2, 1) and np.all((p > 0) & (p < 1))


def test_discriminator_depends_on_age_only_change():
    d = build_discriminator()
    x = np.repeat(_faces(1), 6, axis=0)
    p = keras.ops.convert_to_numpy(d([x, _ages(list(range(6)))]))[:, 0]
    assert len(np.unique(np.round(p, 7))) == 6, p


def test_other_sizes_and_age_counts():
    g = build_generator(z_dim=32, num_ages=3, image_size=32)
    d = build_discriminator(image_size=32, num_ages=3)
    e = build_encoder(image_size=32, z_dim=32)
    x = keras.ops.convert_to_numpy(g([RNG.normal(size=(2, 32)).astype(np.float32), _ages([0, 2], 3)]))
    assert tuple(x.shape) == (2, 32, 32, 3)
    assert tuple(d([x, _ages([0, 2], 3)]).shape) == (2, 1)
    assert tuple(e(x).shape) == (2, 32)
    # the age is tiled to the first conv's output: 16x16 here, not the book's fixed 32x32
    assert tuple(d.get_layer("tile_age").output.shape) == (None, 16, 16, 64 + 3)


@pytest.mark.parametrize("builder", [build_encoder, build_generator, build_discriminator])
def test_safe_save_load_round_trip(builder, tmp_path):
    model = builder()
    inputs = _faces(2) if builder is build_encoder else None
    if builder is build_generator:
        inputs = [RNG.normal(size=(2, 100)).astype(np.float32), _ages([0, 4])]
    if builder is build_discriminator:
        inputs = [_faces(2), _ages([1, 5])]
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model(inputs)), keras.ops.convert_to_numpy(loaded(inputs))
    )


def test_face_recognizer_unit_norm_and_round_trip(tmp_path):
    fr = build_face_recognizer(weights=None, input_size=75)  # the backbone's smallest input
    x = _faces(2)
    emb = keras.ops.convert_to_numpy(fr(x))
    assert emb.shape == (2, 128)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    path = tmp_path / "fr.keras"
    fr.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), emb, atol=1e-6)


def test_face_recognizer_default_input_is_160():
    fr = build_face_recognizer(weights=None)
    assert tuple(fr.get_layer("resize").output.shape) == (None, 160, 160, 3)


def test_imagenet_weights_offline_say_how_to_pass_a_local_file(monkeypatch):
    from age_cgan import networks

    def offline(*args, **kwargs):
        raise OSError("URL fetch failure: Name or service not known")

    monkeypatch.setattr(networks.keras.applications, "InceptionResNetV2", offline)
    from age_cgan.cli.words import cli_message

    with pytest.raises(networks.WeightsUnavailable, match=r"fr_weights='PATH'") as offline_error:
        build_face_recognizer(weights="imagenet")
    assert "--fr-weights PATH" in cli_message(offline_error.value)  # as train.py says it
    assert "--fr-weights none" in cli_message(offline_error.value)
