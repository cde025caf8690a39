"""The image-to-image aging network and its age estimator: networks, augmentation, the two
training stages (with resume), the ``network`` method, the own-age guess, full resolution, the
default method and its fallback, and infer.py on a run that has them."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import TINY, make_face_folder

from age_cgan import networks
from age_cgan.ages import PAPER_BINS
from age_cgan.aging import AgingModels, add_change
from age_cgan.cli.words import cli_message
from age_cgan.config import TrainConfig
from age_cgan.data.augment import augment

NUM_AGES = PAPER_BINS.num_ages


def test_networks_shapes_sizes_and_the_zero_change_at_the_start():
    for arch in ("lite", "tutorial"):
        estimator = networks.build_age_estimator(64, NUM_AGES, arch)
        t = networks.build_aging_network(64, NUM_AGES, arch)
        d = networks.build_aging_discriminator(64, NUM_AGES, arch)
        assert [o[1:] for o in estimator.output_shape] == [(NUM_AGES,), (1,)]
        assert t.output_shape == (None, 64, 64, 3) and d.output_shape == (None, 8, 8, 1)
    lite = (networks.build_age_estimator(64, NUM_AGES, "lite").count_params()
            + networks.build_aging_network(64, NUM_AGES, "lite").count_params())
    assert lite * 4 < 7.3e6  # with E and G (17.7 MB) the shipped model stays under 25 MB
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    ages = np.eye(NUM_AGES, dtype=np.float32)[[0, 5]]
    assert np.all(np.asarray(t([x, ages, ages[::-1]])) == 0)  # starts at "the photo unchanged"
    p0, p1 = (np.asarray(d([x, a])) for a in (ages, ages[::-1]))
    assert not np.allclose(p0, p1)  # the age, projected on every patch, changes D's verdict
    last = t.get_layer("light_and_colour")
    rng = np.random.default_rng(3)
    last.set_weights([rng.normal(0, 0.05, w.shape).astype("float32") for w in last.get_weights()])
    gray = np.repeat(x[..., :1], 3, axis=-1)
    change = np.asarray(t([gray, ages, ages[::-1]]))
    assert np.abs(change).max() > 0 and np.allclose(change, change[..., :1], atol=1e-6)
    colour = np.asarray(t([x, ages, ages[::-1]])) - np.asarray(t([x, ages, ages[::-1]])).mean(
        -1, keepdims=True)  # colour changes only along the photo's own colour
    own = x - x.mean(-1, keepdims=True)
    ratio = colour / np.where(np.abs(own) > 1e-3, own, np.nan)
    assert np.nanmax(np.abs(ratio - ratio[..., :1])) < 1e-3


def test_augment_is_seeded_keeps_shape_and_leaves_the_input():
    faces = np.random.default_rng(1).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    before = faces.copy()
    a = augment(faces, np.random.default_rng(5))
    b = augment(faces, np.random.default_rng(5))
    assert a.shape == faces.shape and a.dtype == np.uint8 and np.array_equal(a, b)
    assert np.array_equal(faces, before) and not np.array_equal(a, faces)
    gray = augment(faces, np.random.default_rng(0), rates={"gray": 1.0})
    assert np.abs(gray.astype(int) - gray[..., :1]).max() <= 1  # one level of rounding


def write_tiny_prototypes(run, faces_folder):
    """RUN/prototypes.npz from the tiny faces, with a stand-in for dlib's landmarks (blobs have
    none): the teacher of stage aging."""
    from age_cgan.data import load_dataset
    from age_cgan.prototypes.build import build_prototypes

    template = np.random.default_rng(1).uniform(0.25, 0.75, (68, 2)).astype("float32")
    dataset = load_dataset(faces_folder, 128, cache_dir=False, progress=False)
    build_prototypes(dataset, lambda f: np.repeat(template[None], len(f), axis=0), min_group=1,
                     workers=1, progress=False).save(run / "prototypes.npz")


@pytest.fixture(scope="module")
def aging_run(tmp_path_factory, tiny_faces):
    """A run with stages age and aging trained for 2 steps, then resumed to 4; stage aging
    learns from the prototypes' pairs and measures its figures on 6 validation faces."""
    from age_cgan.training import train

    run = tmp_path_factory.mktemp("runs") / "aging"
    cache = tmp_path_factory.mktemp("cache")
    base = dict(data=str(tiny_faces), run=str(run), data_cache=str(cache), arch="lite",
                **TINY)
    train(TrainConfig(stage="age", steps=2, **base))
    write_tiny_prototypes(run, tiny_faces)
    aging = dict(base, aging_figure_faces=6, aging_pair_faces=12)
    train(TrainConfig(stage="aging", steps=2, **aging))
    before = json.loads((run / "stageaging" / "metrics.jsonl").read_text().splitlines()[-1])
    result = train(TrainConfig(stage="aging", steps=4, resume=True, **aging))
    (run / "prototypes.npz").unlink()  # the tests below see a run of the network alone
    return run, before, result


def test_the_stages_train_resume_and_log(aging_run):
    run, before, result = aging_run
    assert before["step"] == 2 and result["aging"]["final_losses"]["step"] == 4
    for network in ("age_estimator", "aging_network", "aging_discriminator"):
        assert (run / "models" / f"{network}.keras").is_file(), network
    summary = json.loads((run / "stageage" / "summary.json").read_text())
    assert {"accuracy", "within_one", "mae_years"} <= set(summary["test"])
    losses = result["aging"]["final_losses"]
    assert {"aging/loss/adversarial", "aging/loss/age", "aging/loss/reconstruction",
            "aging/loss/tint", "aging/loss/pair", "aging/loss/d"} <= set(losses)
    # the pairs were made once, for the faces the stage draws, and kept for the resume
    with np.load(run / "stageaging" / "pairs.npz") as pairs:
        assert pairs["aged"].shape[:2] == (len(pairs["rows"]), NUM_AGES)
    grid = np.asarray(Image.open(sorted((run / "stageaging" / "samples").glob("*.png"))[-1]))
    assert grid.shape[1] > (1 + NUM_AGES) * 32  # input | every age
    assert grid.shape[0] > 2 * TINY["grid_rows"] * 32  # each face: prototypes, then network
    # the three figures, measured at each sample step on validation faces, beside the
    # prototypes' own (a judge that is not installed is left out)
    lines = [json.loads(line) for line in (run / "stageaging" / "metrics.jsonl").read_text()
             .splitlines()]
    figures = [line for line in lines if "aging/validation/same_person" in line]
    assert [line["step"] for line in figures] == [2, 4]
    assert all(0 <= v <= 1 for line in figures for k, v in line.items() if k != "step")
    assert {"aging/validation/in_target", "aging/validation_prototypes/same_person"} <= \
        set(figures[0])  # (the tiny run has too few validation faces for the two-sample test)


def test_spectral_normalisation_bounds_the_discriminator_layers():
    d = networks.build_aging_discriminator(32, NUM_AGES, "lite")
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    ages = np.eye(NUM_AGES, dtype=np.float32)[[0, 5]]
    layer = d.get_layer("d2_conv")
    layer.kernel.assign(np.asarray(layer.kernel) * 50.0)  # a kernel far from norm 1
    for _ in range(30):  # each training call is one power iteration
        d([x, ages], training=True)
    w = np.asarray(layer.kernel).reshape(-1, layer.filters)
    u = np.asarray(layer.u)
    v = u @ w.T / np.linalg.norm(u @ w.T)
    sigma = float(((v @ w) @ u.T).item() / np.linalg.norm(u))
    assert abs(sigma / np.linalg.svd(w, compute_uv=False)[0] - 1) < 0.02
    # the convolution uses the kernel over its largest singular value: scaling the kernel
    # leaves the output as it was
    before = np.asarray(d([x, ages], training=False))
    layer.kernel.assign(np.asarray(layer.kernel) * 3.0)
    assert np.allclose(np.asarray(d([x, ages], training=False)), before, atol=1e-4)


def test_stage_aging_trains_at_its_own_size_from_the_prototype_faces(tmp_path, tiny_faces):
    """Stage aging at 64 px on a run of 32 px faces: the faces come from --prototype-data at
    64 px (the run's 48 px faces are refused, never upscaled), the network and its
    discriminator are built at 64."""
    from age_cgan.training import train

    base = dict(data=str(tiny_faces), run=str(tmp_path / "r"), data_cache=str(tmp_path / "c"),
                arch="lite", **TINY)
    train(TrainConfig(stage="age", steps=2, **base))
    write_tiny_prototypes(tmp_path / "r", tiny_faces)
    with pytest.raises(ValueError) as refused:
        train(TrainConfig(stage="aging", steps=2, aging_size=64, **base))
    assert cli_message(refused.value).startswith(
        "faces of at least 64 px are needed for stage aging at --aging-size 64, and --data "
        f"{tiny_faces} holds 48 px faces (they would be upscaled): give --prototype-data a "
        "folder of 64 px faces, made with `python -m age_cgan.data prepare UTKFACE_DIR "
        "~/data/utkface64 --size 64`")
    faces64 = make_face_folder(tmp_path / "faces64", size=64)
    train(TrainConfig(stage="aging", steps=2, aging_size=64, aging_figure_faces=0,
                      prototype_data=str(faces64), **base))
    network = keras_load(tmp_path / "r" / "models" / "aging_network.keras")
    assert network.input_shape[0][1:] == (64, 64, 3)
    summary = json.loads((tmp_path / "r" / "stageaging" / "summary.json").read_text())
    assert summary["image_size"] == 64
    with pytest.raises(Exception, match="aging_size"):
        TrainConfig(stage="aging", aging_size=60)


def keras_load(path):
    import keras

    return keras.models.load_model(path)


def test_the_stage_graph_asks_for_the_estimator_first(tmp_path, tiny_faces):
    from age_cgan.runs import MissingModel
    from age_cgan.training import train

    with pytest.raises(MissingModel) as missing:
        train(TrainConfig(stage="aging", data=str(tiny_faces), run=str(tmp_path / "r"),
                          steps=2, **TINY))
    assert missing.value.network == "age_estimator"
    assert not (tmp_path / "r" / "config.json").exists()


def _tiny_models(aging_run, **kwargs):
    run, _, _ = aging_run
    return AgingModels.from_run(run, **kwargs)


def test_network_method_guesses_the_age_and_keeps_the_photo_at_its_own(aging_run):
    models = _tiny_models(aging_run)
    assert models.encoder is None and models.default_method() == ("network", None)
    face = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    aged = models.age(face, "network", progress=False)
    assert aged.source_by == "age estimator" and 0 < aged.source_confidence <= 1
    assert aged.aged.shape == (NUM_AGES, 32, 32, 3) and aged.z is None
    record = aged.record()
    assert record["source_estimated_by"] == "age estimator" and record["z0_distance"] is None
    given = models.age(face, "network", source_age=70, progress=False)
    assert given.source_label == "60+" and given.source_confidence is None
    with pytest.raises(Exception, match="encoder"):  # Age-cGAN's methods need E and G
        models.age(face, "pixel", progress=False)


def test_the_own_age_is_one_guess(aging_run):
    """The estimator's years join its category only where the years shown (rounded) fall in
    it: never "0-18, about 37 years", nor "0-18, about 19 years" for 18.6 (infer's line,
    --json and the page say one thing)."""
    from age_cgan.cli.explain import own_age_label, own_age_line

    models = _tiny_models(aging_run)
    face = np.zeros((32, 32, 3), np.uint8)
    for years, shown in ((37.0, None), (12.0, 12), (18.6, None), (18.4, 18)):
        models.estimate_sources = lambda faces, y=years: (np.array([0]), np.array([0.6]),
                                                          np.array([y]))
        aged = models.age(face, "network", progress=False)
        assert aged.source_label == "0-18" and aged.source_years == shown
        assert aged.record()["source_years"] == shown
        line = own_age_line(aged)
        assert line.startswith("own age guessed by the age estimator: 0-18 (60% sure")
        assert (f"about {shown} years" in line) == (shown is not None) and "37" not in line
        assert "about 19" not in line
    assert own_age_label(aged) == "own age\n(estimated 0-18)"
    given = models.age(face, "network", source_age=70, progress=False)
    assert own_age_label(given) == "own age\n(given 60+)" and given.strength == 1.0


def test_the_change_is_added_at_full_resolution_and_grey_stays_grey():
    photo = np.full((128, 128, 3), 120, np.uint8)
    photo[:, :, 0] = 140  # a colour photo
    change = np.zeros((2, 32, 32, 3), np.float32)
    change[1, :16] = [0.2, -0.1, 0.0]  # brighter red, less green on the top half
    out = add_change(photo, change)
    assert out.shape == (2, 128, 128, 3) and np.array_equal(out[0], photo)
    assert out[1, 10, 10, 0] > 140 and out[1, 10, 10, 1] < 120 and out[1, 120, 10, 0] == 140
    gray = np.repeat(photo[..., 1:2], 3, axis=-1)
    grey_out = add_change(gray, change)
    assert np.abs(grey_out[1].astype(int) - grey_out[1][..., :1]).max() == 0  # brightness only


def test_a_model_without_the_aging_network_falls_back_and_says_so(aging_run, tmp_path):
    run, _, _ = aging_run
    models = AgingModels.from_run(run)
    models.aging_network = None
    models.config["default_method"] = "difference"
    method, note = models.default_method()
    assert method == "difference" and "no aging network" in note and "difference" in note


def test_infer_uses_the_network_and_prints_the_guess(aging_run, tmp_path, capsys):
    pytest.importorskip("dlib")
    from age_cgan.cli.infer import main
    from age_cgan.examples import PORTRAIT

    run, _, _ = aging_run
    out = tmp_path / "aged"
    assert main([str(PORTRAIT), "--run", str(run), "--out", str(out), "--separate",
                 "--no-progress", "--json", str(tmp_path / "r.jsonl")]) == 0
    text = capsys.readouterr()
    assert "own age guessed by the age estimator" in text.out
    record = json.loads((tmp_path / "r.jsonl").read_text())
    assert record["method"] == "network" and record["detail_side"] >= 32
    crop = np.asarray(Image.open(out / "astronaut_aged" / "age_60plus.png"))
    assert crop.shape[0] == record["detail_side"]  # the crop's own size, not the network's
    # a damaged aging network is named
    broken = tmp_path / "broken.keras"
    broken.write_text("not a model")
    assert main([str(PORTRAIT), "--run", str(run), "--aging-network", str(broken),
                 "--out", str(tmp_path / "x.png")]) == 2
    assert "broken.keras (aging_network)" in capsys.readouterr().err


def test_the_page_defaults_to_the_method_infer_uses(aging_run, tmp_path):
    from age_cgan.app_handler import AgingApp, aging_methods

    models = _tiny_models(aging_run)
    assert aging_methods(models)[0] == models.default_method()[0] == "network"
    models.aging_network = None  # an older package: its own Age-cGAN method, as in infer.py
    models.config["default_method"] = "difference"
    assert AgingApp(models, None, tmp_path).methods[0] == "difference"


def test_a_method_is_available_when_the_model_has_its_networks(aging_run):
    """The one check infer, the page and evaluate use: each method's networks
    (``METHOD_NEEDS``), the default first; a network run alone offers only itself."""
    from age_cgan.aging.methods import METHOD_NEEDS, METHODS

    models = _tiny_models(aging_run)
    assert set(METHOD_NEEDS) == set(METHODS)
    assert models.available_methods() == ("network",)  # no encoder or generator here
    reason = models.unavailable_reason("pixel")
    assert "has no encoder (models/encoder.keras), which the pixel method needs" in reason
    models.age_estimator = None  # the network method needs the estimator too
    assert "no age estimator" in models.unavailable_reason("network")


def test_the_page_handler_names_why_a_method_is_not_offered(aging_run, tmp_path):
    from age_cgan.app_handler import AgingApp, face_number, unavailable_methods

    app = AgingApp(_tiny_models(aging_run), None, tmp_path)
    assert app.methods == ("network",)
    missing = unavailable_methods(app.models)
    assert set(missing) == {"none", "pixel", "identity", "difference", "prototype"}
    assert "the train command" in missing["pixel"] and "`" not in missing["pixel"]  # no flags
    refused = app.age("photo.jpg", ["60+"], "identity", 0)["message"]
    assert refused.startswith("Method 'identity' is not offered: this model cannot run it")
    assert "Choose one of network" in refused
    assert [face_number(v, 2) for v in ("1", 1, "0", None, "x", 7, -3)] == [1, 1, 0, 0, 0, 1, 0]


# --- an aging network of another side than the other networks ----------------------------------

@pytest.fixture(scope="module")
def mixed_model(tmp_path_factory):
    """The shipped model's copy with a 128 px aging network beside its 64 px networks."""
    from conftest import mixed_size_model

    return mixed_size_model(tmp_path_factory.mktemp("mixed") / "model")


def test_an_aging_network_of_another_side_loads_and_changes_at_its_side(mixed_model):
    from age_cgan.aging.network import network_changes

    models = AgingModels.from_run(mixed_model)
    assert models.image_size == 64 and models.aging_network.input_shape[0][1] == 128
    faces = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    change = network_changes(models.aging_network, faces, [1, 4], [0, 5], 1.0)
    assert change.shape == (2, 2, 128, 128, 3) and np.abs(change).max() > 0.01
    aged = models.age_faces(faces, [1, 4], "network", progress=False)  # the evaluation's path
    assert aged.shape == (2, NUM_AGES, 64, 64, 3) and not np.array_equal(aged[:, 0], aged[:, 5])
    big = np.random.default_rng(1).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    for method in ("network", "none", "prototype"):  # 128 px faces: E, G, A read them at 64
        assert models.age_faces(big, [1, 4], method, progress=False).shape == (
            2, NUM_AGES, 128, 128, 3)
    # ages still have to match the bins
    models.bins = models.bins.parse("0-29,30+")
    with pytest.raises(Exception, match="aging_network has 6 age categories"):
        models._check_shapes()


def test_the_aging_network_reads_the_detail_at_its_own_side(mixed_model):
    """age(): the estimator reads the 64 px face, the 128 px network the detail resized to 128
    (not the face upsampled); the change goes onto the face and onto the detail."""
    from age_cgan.aging.network import network_changes
    from age_cgan.data import resize_faces

    from test_judges import astronaut_face

    models = AgingModels.from_run(mixed_model)
    face, detail = astronaut_face(64), astronaut_face(200)
    aged = models.age(face, "network", source_age=40, progress=False, detail=detail)
    assert aged.aged.shape == (NUM_AGES, 64, 64, 3)
    assert aged.aged_detail.shape == (NUM_AGES, 200, 200, 3)
    assert aged.reconstruction_detail.shape == (200, 200, 3)
    cats = [aged.source_category, *range(NUM_AGES)]
    strength = aged.strength
    seen = network_changes(models.aging_network, resize_faces(detail[None], 128), [3], cats,
                           strength)[0]
    assert np.array_equal(aged.aged_detail, add_change(detail, seen)[1:])
    assert np.array_equal(aged.aged, add_change(face, seen)[1:])
    upsampled = network_changes(models.aging_network, face[None], [3], cats, strength)[0]
    assert not np.array_equal(aged.aged_detail, add_change(detail, upsampled)[1:])
    without = models.age(face, "network", source_age=40, progress=False)  # no detail: the face
    assert np.array_equal(without.aged, add_change(face, upsampled)[1:])
    guessed = models.age(face, "network", progress=False, detail=detail)
    assert guessed.source_by == "age estimator"  # from the 64 px face


def test_the_pair_term_is_a_band_decomposition_scaled_to_the_teachers_changes():
    """The pyramid's bands add back up to the image; each band's scale is its mean size in the
    prototypes' changes, so the unchanged photo scores 1 on average over the pairs, and the
    teacher's own face 0."""
    from keras import ops

    from age_cgan.data import normalize
    from age_cgan.training.teacher import pair_distance, pair_scales, pyramid

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (3, 32, 32, 3)).astype("float32")
    bands = pyramid(x, 4)
    rebuilt = bands[-1]
    for band in reversed(bands[:-1]):
        rebuilt = band + ops.image.resize(rebuilt, band.shape[1:3], interpolation="bilinear")
    assert np.allclose(np.asarray(rebuilt), x, atol=1e-5)
    faces = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    aged = np.clip(faces[:, None].astype(int) + rng.normal(0, 20, (4, NUM_AGES, 32, 32, 3)),
                   0, 255).astype(np.uint8)
    for pool in (1, 2):
        scales = pair_scales(faces, aged, pool=pool)
        photos = np.repeat(normalize(faces), NUM_AGES, axis=0)
        targets = normalize(aged.reshape(-1, 32, 32, 3))
        unchanged = np.asarray(pair_distance(photos, targets, scales, pool))
        assert abs(unchanged.mean() - 1.0) < 1e-4
        assert np.allclose(np.asarray(pair_distance(targets, targets, scales, pool)), 0.0)
