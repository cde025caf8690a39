"""The packaged-model folder (checksums, errors naming the file) and the difference method."""

import json

import numpy as np
import pytest

from age_cgan.aging import AgingModels
from age_cgan.cli.infer import main
from age_cgan.pretrained import (CHECKSUMS, DEFAULT_MODEL, PretrainedError, package_run,
                                 read_checksums, verified_run, verify)
from age_cgan.examples import PORTRAIT


@pytest.fixture(scope="module")
def packaged(trained_run, tmp_path_factory):
    return package_run(trained_run, tmp_path_factory.mktemp("model") / "m", "difference", 1.5)


def test_package_records_every_file_and_the_default_method(packaged):
    sums = read_checksums(packaged)
    assert set(sums) == {"config.json", "models/encoder.keras", "models/generator.keras"}
    config = json.loads((packaged / "config.json").read_text())
    assert config["default_method"] == "difference" and config["default_strength"] == 1.5
    assert "run" not in config and "data_cache" not in config  # nothing machine-local
    assert verify(packaged) == packaged


def test_infer_uses_a_packaged_model_and_its_default_method(packaged, tmp_path):
    out = tmp_path / "aged.png"
    log = tmp_path / "faces.jsonl"
    assert main([str(PORTRAIT), "--model", str(packaged), "--out", str(out), "--opt-steps", "2",
                 "--json", str(log), "--no-progress"]) == 0
    record = json.loads(log.read_text())
    assert out.is_file() and record["optimize"] == "difference"


def test_a_damaged_weight_file_is_an_error_naming_it(packaged, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(packaged, copy)
    generator = copy / "models" / "generator.keras"
    data = bytearray(generator.read_bytes())
    data[len(data) // 2] ^= 0xFF
    generator.write_bytes(bytes(data))
    with pytest.raises(PretrainedError, match="generator.keras is damaged"):
        verify(copy)
    assert main([str(PORTRAIT), "--model", str(copy), "--out", str(tmp_path / "x.png")]) == 2
    assert str(generator) in capsys.readouterr().err
    generator.unlink()
    with pytest.raises(PretrainedError, match="generator.keras is missing"):
        verify(copy)
    (copy / CHECKSUMS).unlink()
    with pytest.raises(PretrainedError, match="not a packaged model"):
        verify(copy)


def test_the_shipped_model_verifies_and_is_the_lite_architecture():
    if not (DEFAULT_MODEL / CHECKSUMS).is_file():
        pytest.fail(f"the shipped model is missing from {DEFAULT_MODEL}")
    folder = verified_run()
    config = json.loads((folder / "config.json").read_text())
    assert config["arch"] == "lite" and config["default_method"] == "prototype"
    models = AgingModels.from_run(folder)
    n = models.encoder.count_params() + models.generator.count_params()
    assert n <= 8_000_000  # issue: encoder + generator at most 8M parameters
    assert models.default_method() == ("prototype", None)  # the age prototypes, by default
    assert models.age_estimator is not None and models.aging_network is not None
    assert models.prototypes.bins == models.bins.spec and not models.notes
    assert min(models.prototypes.meta["faces_per_category"]) > 1000
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size <= 32 * 2**20  # what git may hold of weights
    # it has no face recogniser: identity is not offered, and says why (the one check)
    assert models.available_methods() == ("prototype", "none", "pixel", "difference",
                                          "network")
    assert "no face recognizer" in models.unavailable_reason("identity")
    assert all(models.unavailable_reason(m) is None for m in models.available_methods())


def test_the_help_names_the_shipped_models_own_strength():
    from age_cgan.cli import evaluate, infer

    strength = json.loads((DEFAULT_MODEL / "config.json").read_text())["default_strength"]
    for parser in (infer.parser(), evaluate.parser()):
        text = " ".join(parser.format_help().split())
        assert f"{strength:g} for the shipped model's prototype method" in text
        assert "the model's, 1)" not in text


def test_bad_settings_are_refused_in_one_line_before_the_model_loads(tmp_path, capsys,
                                                                     monkeypatch):
    from age_cgan.cli import infer

    def no_load(args):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(infer, "_load", no_load)
    photo = tmp_path / "me.jpg"
    photo.write_bytes(PORTRAIT.read_bytes())
    for flags, words in ((["--strength", "-1"], "--strength must be between 0 and 3"),
                         (["--strength", "1e9"], "--strength must be between 0 and 3"),
                         (["--strength", "nan"], "got nan"),
                         (["--source-age", "300"], "from 0 to 100, got 300"),
                         (["--source-age", "105"], "from 0 to 100, got 105"),
                         (["--out", str(photo)], "is a photo this command reads")):
        assert main([str(photo), *flags]) == 2, flags
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, err
    assert photo.read_bytes() == PORTRAIT.read_bytes()


def test_the_shipped_model_refuses_what_it_cannot_run_and_records_the_strength(tmp_path,
                                                                                capsys):
    wrong = DEFAULT_MODEL / "models" / "age_estimator.keras"
    assert main([str(PORTRAIT), "--aging-network", str(wrong), "--out",
                 str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert f"{wrong} holds a network with 1 input and 2 outputs (it looks like the age " \
        "estimator), not the aging network" in err and "Traceback" not in err
    assert main([str(PORTRAIT), "--method", "identity", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "no face recognizer" in err and "this model runs prototype, none" in err
    log = tmp_path / "faces.jsonl"
    assert main([str(PORTRAIT), "--out", str(tmp_path / "y.png"), "--json", str(log),
                 "--strength", "0.5"]) == 0
    record = json.loads(log.read_text())
    assert record["strength"] == 0.5 and record["method"] == "prototype"
    out = capsys.readouterr().out
    assert "own age guessed by the age estimator" in out


def test_difference_keeps_the_photo_and_adds_gs_change(trained_run):
    models = AgingModels.from_run(trained_run)
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (3, models.image_size, models.image_size, 3), dtype=np.uint8)
    faces[2] = faces[2, ..., :1]  # a greyscale photo stored as RGB
    sources = np.array([0, 3, 5])
    z, _, _ = models.latents(faces, sources, "difference", steps=2, progress=False)
    out = models.images_from_latents(faces, z, sources, "difference")
    for i, source in enumerate(sources):
        np.testing.assert_array_equal(out[i, source], faces[i])  # own age: the photo itself
    assert np.ptp(out[2].astype(int), axis=-1).max() == 0  # grey stays grey
    unchanged = models.images_from_latents(faces, z, sources, "difference", strength=0.0)
    np.testing.assert_array_equal(unchanged, np.repeat(faces[:, None], models.bins.num_ages, 1))
    # the added change is G's difference between the target and the source age at z
    g = models.images_from_latents(faces, z, sources, "pixel").astype(np.float32)
    expected = faces[0].astype(np.float32) + g[0, 4] - g[0, sources[0]]
    inside = (expected > 8) & (expected < 247)  # away from clipping
    assert np.abs(out[0, 4].astype(np.float32) - expected)[inside].max() <= 2.0
