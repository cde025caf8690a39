"""infer.py end to end on a real photo, the per-image latent optimisation, and every error case."""

import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from conftest import REPO

pytest.importorskip("dlib")

from age_cgan import aging  # noqa: E402
from age_cgan.ages import PAPER_BINS  # noqa: E402
from age_cgan.cli.infer import main, parse_ages  # noqa: E402
from age_cgan.examples import PORTRAIT  # noqa: E402
from age_cgan.networks import L2Normalize  # noqa: E402
from age_cgan.runs import RunFolder  # noqa: E402
from age_cgan.visualize import LABEL_HEIGHT  # noqa: E402

SIZE = 32  # a small run keeps the tests fast; infer follows the run's config.json
NUM_AGES = PAPER_BINS.num_ages


def tiny_face_recognizer(size=SIZE):
    """A stand-in FR (face -> unit 16-d embedding): cheap, differentiable, not a recogniser."""
    image = keras.Input((size, size, 3), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, activation="tanh")(image)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(16)(x)
    return keras.Model(image, L2Normalize()(x), name="face_recognizer")


def tiny_encoder_generator(z_dim=16, size=SIZE):
    """Small E and G with the real ones' inputs, outputs and layer kinds (BatchNorm, Dropout):
    the optimisation tests then run in seconds on either backend."""
    image = keras.Input((size, size, 3), name="image")
    x = keras.layers.Conv2D(8, 5, strides=4, activation="relu")(image)
    encoder = keras.Model(image, keras.layers.Dense(z_dim)(keras.layers.Flatten()(x)))
    z, age = keras.Input((z_dim,), name="z"), keras.Input((NUM_AGES,), name="age")
    x = keras.layers.Dense(4 * 4 * 16)(keras.layers.Concatenate()([z, age]))
    x = keras.layers.Dropout(0.2)(keras.layers.BatchNormalization()(x))
    x = keras.layers.UpSampling2D(size // 4)(keras.layers.Reshape((4, 4, 16))(x))
    x = keras.layers.Conv2D(3, 3, padding="same", activation="tanh")(x)
    return encoder, keras.Model([z, age], x)


def train_run(path, data):
    """A real run folder: train.py's stages 1 and 2 for 2 steps on random 'faces' (E and G are
    all infer needs; stage 3 only fine-tunes E and writes the same file)."""
    from age_cgan.cli.train import main as train

    rng = np.random.default_rng(0)
    data.mkdir()
    for i, age in enumerate([5, 12, 22, 25, 33, 36, 44, 47, 52, 55, 65, 72] * 2):
        pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(data / f"{age}_0_0_201701{i:06d}.jpg.chip.jpg")
    common = ["--data", str(data), "--run", str(path), "--steps", "2", "--batch-size", "4",
              "--image-size", str(SIZE), "--fr-weights", "none", "--fr-input-size", "75",
              "--data-cache", str(data.parent / "cache"), "--no-progress"]
    for stage in ("1", "2"):
        assert train(["--stage", stage, *common]) == 0
    return RunFolder(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    return train_run(root / "run", root / "faces")


@pytest.fixture(scope="module")
def models():
    return aging.AgingModels(*tiny_encoder_generator(), PAPER_BINS,
                             face_recognizer=tiny_face_recognizer())


@pytest.fixture(scope="module")
def face():
    from age_cgan.faces import find_faces

    return find_faces(PORTRAIT, SIZE)[0].image


def grid_shape(columns, zoom=2, pad=2):
    """infer's grid: a two-line header ("own age" over how it was found), then the faces."""
    cell = SIZE * zoom
    return (cell + 2 * pad + 2 * LABEL_HEIGHT, columns * (cell + pad) + pad, 3)


def _weights(*networks):
    return [np.array(v.value) for network in networks for v in network.variables]


# --- the aging pipeline -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["pixel", "identity"])
def test_optimisation_lowers_its_loss_and_changes_no_weight(models, face, mode):
    networks = (models.encoder, models.generator, models.face_recognizer)
    before = _weights(*networks)
    z0 = models.encode(face[None])[0]
    z, history = models.optimize_latent(face, z0, category=2, mode=mode, steps=15, progress=False)
    assert len(history) == 16 and min(history) < 0.98 * history[0], history
    assert not np.allclose(z, z0)
    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(*networks)))
    # the z returned is the best one seen: its loss, recomputed, is the minimum
    _, again = models.optimize_latent(face, z, category=2, mode=mode, steps=0, progress=False)
    assert again[0] == pytest.approx(min(history), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("mode", ["pixel", "identity"])
def test_batched_optimisation_equals_one_face_at_a_time(models, face, mode):
    """A batch of 3 (different faces, starts and categories) gives each face what optimising
    it alone gives: the same loss history and the same best z; and every loss goes down."""
    faces = np.stack([face, face[:, ::-1], np.roll(face, 3, axis=0)])
    z0 = models.encode(faces)
    z0[1] += 0.5  # a start of its own
    categories = [2, 0, 5]
    z, history = models.optimize_latents(faces, z0, categories, mode, steps=8, progress=False)
    assert z.shape == z0.shape and history.shape == (9, 3)
    assert np.all(history.min(0) < history[0])
    for i in range(3):
        alone, alone_history = models.optimize_latent(faces[i], z0[i], categories[i], mode,
                                                      steps=8, progress=False)
        np.testing.assert_allclose(history[:, i], alone_history, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(z[i], alone, rtol=1e-4, atol=1e-5)
    # in chunks of 2 (the last one padded): the same again
    chunked, chunked_history = models.optimize_latents(faces, z0, categories, mode, steps=8,
                                                       progress=False, batch_size=2)
    np.testing.assert_allclose(chunked_history, history, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(chunked, z, rtol=1e-4, atol=1e-5)


def test_age_every_category(models, face):
    aged = models.age(face, "pixel", steps=3, source_age=35, progress=False)
    assert aged.aged.shape == (NUM_AGES, SIZE, SIZE, 3) and aged.aged.dtype == np.uint8
    assert aged.reconstruction.shape == (SIZE, SIZE, 3)
    assert aged.labels == PAPER_BINS.labels and aged.source_label == "30-39"
    record = aged.record()
    assert record["source_category_given"] and record["steps"] == 3
    assert record["loss_end"] <= record["loss_start"] and record["z0_distance"] > 0
    plain = models.age(face, categories=[0, 5], progress=False)
    assert plain.aged.shape[0] == 2 and plain.z_distance == 0
    assert plain.record()["loss_start"] is None
    assert not plain.source_given  # estimated from the reconstructions at each age
    assert 0 <= plain.source_category < NUM_AGES


def test_missing_face_recognizer_is_built_with_a_warning(run, monkeypatch):
    calls = []

    def fake_build(image_size, weights=None, input_size=160, arch="tutorial"):
        calls.append((image_size, weights, input_size))
        return tiny_face_recognizer(image_size)

    from age_cgan import networks  # runs.load_face_recognizer builds it from there

    monkeypatch.setattr(networks, "build_face_recognizer", fake_build)
    models = aging.AgingModels.from_run(run.path)
    with pytest.warns(UserWarning, match="meaningless"):
        models.face_recognizer
    assert calls == [(SIZE, None, 75)]


def test_parse_ages():
    assert parse_ages("all", PAPER_BINS) == list(range(NUM_AGES))
    assert parse_ages("60+, 19-29", PAPER_BINS) == [1, 5]
    assert parse_ages("25,70,27", PAPER_BINS) == [1, 5]
    with pytest.raises(ValueError, match="neither a category"):
        parse_ages("20-30", PAPER_BINS)


def test_optimisation_under_jax():
    """The latent optimisation again on the JAX backend (the backend layer's other half)."""
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
         "-k", "lowers_its_loss or batched_optimisation"],
        cwd=REPO, env=env, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "4 passed" in result.stdout


# --- the command line ---------------------------------------------------------------------------


def test_infer_py_writes_the_grid(run, tmp_path):
    """The issue's acceptance command, as a user runs it."""
    out = tmp_path / "aged.png"
    result = subprocess.run(
        [sys.executable, "infer.py", str(PORTRAIT), "--run", str(run.path), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert np.asarray(Image.open(out)).shape == grid_shape(2 + NUM_AGES)


def test_cli_options_json_and_separate_images(run, tmp_path):
    out, log = tmp_path / "faces", tmp_path / "faces.jsonl"
    rc = main([str(PORTRAIT), "--run", str(run.path), "--out", str(out), "--optimize", "pixel",
               "--opt-steps", "3", "--ages", "19-29,60+", "--separate", "--zoom", "1",
               "--json", str(log), "--no-progress"])
    assert rc == 0
    record = json.loads(log.read_text())
    assert record["photo"] == str(PORTRAIT) and record["optimize"] == "pixel"
    assert record["loss_end"] <= record["loss_start"] and record["steps"] == 3
    grid = np.asarray(Image.open(record["grid"]))
    assert record["grid"] == str(out / "astronaut_aged.png")
    assert grid.shape == grid_shape(4, zoom=1)
    own = f"own age (estimated {record['source_category']})"
    assert set(record["images"]) == {"input", own, "19-29", "60+"}
    for path in record["images"].values():
        assert np.asarray(Image.open(path)).shape == (SIZE, SIZE, 3)


def test_several_faces(run, tmp_path, capsys):
    portrait = Image.open(PORTRAIT).convert("RGB")
    canvas = Image.new("RGB", (448, 256), "white")
    canvas.paste(portrait.resize((192, 192)), (0, 32))
    canvas.paste(portrait, (192, 0))
    canvas.save(tmp_path / "two.png")
    assert main([str(tmp_path / "two.png"), "--run", str(run.path), "--out", str(tmp_path / "a"),
                 "--no-progress"]) == 0
    assert "2 faces found, using the largest" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["two_aged.png"]
    assert main([str(tmp_path / "two.png"), "--run", str(run.path), "--out", str(tmp_path / "b"),
                 "--all-faces", "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "two_face1_aged.png", "two_face2_aged.png"]


def _bad_photos(folder):
    """One photo of each kind infer.py must refuse, with the words its message must contain."""
    folder.mkdir()
    ramp = np.tile(np.linspace(0, 255, 200, dtype=np.uint8), (200, 1))
    Image.fromarray(ramp).save(folder / "wall.png")
    (folder / "notes.jpg").write_text("not an image")
    Image.open(PORTRAIT).resize((40, 40)).save(folder / "thumb.png")
    return {"wall.png": "no face found", "notes.jpg": "not an image", "thumb.png": "too small"}


def test_each_bad_photo_alone_fails_and_writes_nothing(run, tmp_path, capsys):
    for name, words in _bad_photos(tmp_path / "bad").items():
        out = tmp_path / f"{name}.png"
        rc = main([str(tmp_path / "bad" / name), "--run", str(run.path), "--out", str(out)])
        err = capsys.readouterr().err
        assert rc == 1 and name in err and words in err, err
        assert not out.exists()


def test_folder_keeps_going_past_bad_files(run, tmp_path, capsys):
    expected = _bad_photos(tmp_path / "photos")
    (tmp_path / "photos" / "good.jpg").write_bytes(PORTRAIT.read_bytes())
    rc = main([str(tmp_path / "photos"), str(tmp_path / "gone.jpg"), "--run", str(run.path),
               "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 1
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good_aged.png"]
    summary = capsys.readouterr().err.split("could not be used:")[-1]
    for name, words in {**expected, "gone.jpg": "no such file"}.items():
        assert name in summary and words in summary, summary


@pytest.mark.parametrize("problem, words", [
    ("no folder", "does not exist"),
    ("no config", "not a run folder"),
    ("no generator", "generator.keras missing"),
    ("config without keys", "incomplete: no image_size"),
])
def test_run_folder_errors(run, tmp_path, capsys, problem, words):
    folder = tmp_path / "run"
    if problem == "no config":
        folder.mkdir()
    elif problem == "no generator":
        shutil.copytree(run.path, folder)
        (folder / "models" / "generator.keras").unlink()
    elif problem == "config without keys":
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"z_dim": 100, "age_bins": "0-18,19+"}))
    out = tmp_path / "aged.png"
    assert main([str(PORTRAIT), "--run", str(folder), "--out", str(out)]) == 2
    assert words in capsys.readouterr().err
    assert not out.exists()


def test_explicit_network_files(run, tmp_path, capsys):
    encoder, generator = run.model_path("encoder"), run.model_path("generator")
    files = ["--encoder", str(encoder), "--generator", str(generator)]
    out = tmp_path / "aged.png"
    assert main([str(PORTRAIT), *files, "--out", str(out), "--no-progress"]) == 0
    assert np.asarray(Image.open(out)).shape == grid_shape(2 + NUM_AGES)
    assert main([str(PORTRAIT), *files, "--age-bins", "0-30,31+", "--out", str(out)]) == 2
    assert "6 age inputs but the age bins '0-30,31+' are 2" in capsys.readouterr().err
    (tmp_path / "broken.keras").write_text("not a model")
    assert main([str(PORTRAIT), "--encoder", str(encoder), "--generator",
                 str(tmp_path / "broken.keras"), "--out", str(out)]) == 2
    assert "cannot load" in capsys.readouterr().err


def test_outputs_never_replace_inputs_and_are_checked_before_the_work(run, tmp_path, capsys):
    photo = tmp_path / "me.png"
    Image.open(PORTRAIT).save(photo)
    original = photo.read_bytes()
    assert main([str(photo), "--run", str(run.path), "--out", str(photo)]) == 2
    assert "is a photo this command reads" in capsys.readouterr().err
    assert photo.read_bytes() == original
    # --out is the photos' folder: the second run does not age the first run's grids
    for _ in range(2):
        assert main([str(tmp_path), "--run", str(run.path), "--out", str(tmp_path),
                     "--no-progress"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["me.png", "me_aged.png"]
    # outputs that cannot be written stop the command before any face is made
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for flags in (["--out", str(blocker / "out")], ["--json", str(blocker / "log.jsonl")]):
        assert main([str(photo), "--run", str(run.path), "--no-progress",
                     "--out", str(tmp_path / "o.png"), *flags]) == 2
        err = capsys.readouterr().err
        assert "cannot write the output" in err and "a_file is a file" in err, err
        assert not (tmp_path / "o.png").exists()
    # a --json in a folder that does not exist yet is made, like --out's
    log = tmp_path / "new" / "log.jsonl"
    assert main([str(photo), "--run", str(run.path), "--no-progress", "--out",
                 str(tmp_path / "o.png"), "--json", str(log)]) == 0
    assert json.loads(log.read_text())["photo"] == str(photo)


def test_an_image_suffix_is_a_file_and_other_programs_files_are_kept(run, tmp_path, capsys):
    """--out new.jpg writes that JPEG file (not a folder named new.jpg) and replaces it on
    the next run; a file infer.py did not write is replaced only with --overwrite; a suffix it
    cannot write is refused before the model loads."""
    jpeg = tmp_path / "new_out.jpg"
    for _ in range(2):
        assert main([str(PORTRAIT), "--run", str(run.path), "--out", str(jpeg),
                     "--no-progress"]) == 0
        with Image.open(jpeg) as written:
            assert jpeg.is_file() and written.format == "JPEG"
    capsys.readouterr()
    mine = tmp_path / "mine.png"
    Image.new("RGB", (8, 8), "red").save(mine)
    original = mine.read_bytes()
    assert main([str(PORTRAIT), "--run", str(run.path), "--out", str(mine)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"infer.py: error: {mine} exists and was not written by age-cgan: pass --overwrite to "
        "replace it, or choose another --out")
    assert mine.read_bytes() == original
    folder = tmp_path / "grids"
    folder.mkdir()
    (folder / "astronaut_aged.png").write_bytes(original)  # another program's file of that name
    assert main([str(PORTRAIT), "--run", str(run.path), "--out", str(folder)]) == 2
    assert "astronaut_aged.png exists and was not written by age-cgan" in capsys.readouterr().err
    assert main([str(PORTRAIT), "--run", str(run.path), "--out", str(mine), "--overwrite",
                 "--no-progress"]) == 0
    assert np.asarray(Image.open(mine)).shape == grid_shape(2 + NUM_AGES)
    capsys.readouterr()
    assert main([str(PORTRAIT), "--run", str(run.path), "--out", str(tmp_path / "x.webp")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"infer.py: error: --out {tmp_path / 'x.webp'}: a grid is written as a .png or .jpg "
        "file; name one of those, or a folder (a name without an image suffix)")


def test_a_128_px_aging_network_beside_64_px_networks(tmp_path):
    """A packaged model whose aging network reads 128 px (the others 64): infer.py verifies it,
    the network reads the crop's detail and the aged crops keep the detail's size."""
    from conftest import mixed_size_model

    model = mixed_size_model(tmp_path / "model")
    portrait = Image.open(PORTRAIT).convert("RGB")
    portrait.resize((portrait.width * 3, portrait.height * 3), Image.Resampling.LANCZOS).save(
        tmp_path / "big.png")
    out, log = tmp_path / "aged", tmp_path / "faces.jsonl"
    assert main([str(tmp_path / "big.png"), "--model", str(model), "--method", "network",
                 "--separate", "--out", str(out), "--json", str(log), "--no-progress"]) == 0
    record = json.loads(log.read_text())
    assert record["method"] == "network" and record["detail_side"] > 128
    photo = np.asarray(Image.open(record["images"]["input"]), np.int16)
    aged = np.asarray(Image.open(record["images"]["60+"]), np.int16)
    assert photo.shape == aged.shape == (record["detail_side"],) * 2 + (3,)
    assert np.abs(aged - photo).mean() > 1  # the network's change, added at the detail's size
