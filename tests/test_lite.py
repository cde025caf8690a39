"""The CPU-sized architecture (--arch lite), D's wrong-age term, and the lite recipe."""

import copy
import json

import numpy as np
import pytest

from age_cgan import networks
from age_cgan.cli.words import cli_message
from age_cgan.config import TrainConfig
from conftest import TINY, make_face_folder


def test_lite_sizes_fit_the_cpu_budget():
    e, g = networks.build_encoder(arch="lite"), networks.build_generator(arch="lite")
    d, fr = networks.build_discriminator(arch="lite"), networks.build_face_recognizer(arch="lite")
    assert (e.count_params(), g.count_params(), d.count_params(), fr.count_params()) == (
        3_230_884, 1_166_947, 397_761, 1_700_512)
    assert e.count_params() + g.count_params() <= 8_000_000  # issue: E + G at most 8M
    z = np.random.default_rng(0).standard_normal((2, 100)).astype("float32")
    ages = np.eye(6, dtype="float32")[[0, 5]]
    image = np.asarray(g([z, ages], training=False))
    assert image.shape == (2, 64, 64, 3) and np.abs(image).max() <= 1.0
    assert np.asarray(fr(image)).shape == (2, 128)
    # the age reaches every generator block: the same z at two ages differs
    same_z = np.repeat(z[:1], 2, axis=0)
    two = np.asarray(g([same_z, ages], training=False))
    assert np.abs(two[0] - two[1]).mean() > 1e-3


def test_lite_face_recognizer_has_no_pretrained_backbone():
    with pytest.raises(ValueError, match="no pretrained backbone"):
        networks.build_face_recognizer(arch="lite", weights="imagenet")
    with pytest.raises(ValueError, match="unknown architecture"):
        networks.build_encoder(arch="huge")
    with pytest.raises(ValueError, match="arch must be tutorial or lite") as refused:
        TrainConfig(arch="huge")
    assert cli_message(refused.value).startswith("--arch must be")  # train.py's wording


def test_lite_stage1_with_the_wrong_age_term(tiny_faces, tmp_path):
    from age_cgan.training import train

    run = tmp_path / "lite"
    train(TrainConfig(stage="1", data=str(tiny_faces), run=str(run), steps=2, arch="lite",
                      mismatch_weight=1.0, data_cache=str(tmp_path / "cache"), **TINY))
    rows = [json.loads(line) for line in (run / "stage1" / "metrics.jsonl").open()]
    assert all(0.0 < row["stage1/d/p_wrong_age"] < 1.0 for row in rows)
    assert json.loads((run / "config.json").read_text())["arch"] == "lite"
    # later stages take the run's architecture without being told
    from age_cgan.runs import RunFolder

    train(TrainConfig(stage="2", run=str(run), steps=2, **TINY))
    encoder = RunFolder(run).load_model("encoder")
    assert encoder.count_params() == networks.build_encoder(32, 100, "lite").count_params()


def models_faces(side):
    return np.random.default_rng(2).integers(0, 256, (2, side, side, 3), dtype=np.uint8)


def test_the_lite_recipe_plans_trains_and_resumes(tmp_path, monkeypatch):
    from age_cgan.training import recipe

    # 32 px faces with a stand-in teacher beside them, for the FR stage
    faces = make_face_folder(tmp_path / "UTKFace", count=24, size=32)
    names = sorted(p.name for p in faces.glob("*.jpg"))
    np.savez(faces / "dlib_descriptors.npz", filenames=np.array(names),
             descriptors=np.random.default_rng(0).normal(size=(len(names), 128)).astype("float32"))

    # the prototypes' faces: 128 px, at least 15 training faces in every category
    faces128 = make_face_folder(tmp_path / "UTKFace128", count=132, size=128)
    quick = copy.deepcopy(recipe.RECIPES["lite"])
    quick["stages"] = [(stage, {"steps": 2}) for stage, _ in quick["stages"]]
    quick["common"] = {**quick["common"], "batch_size": 4, "checkpoint_every": 1,
                       "sample_every": 2, "log_every": 1}
    monkeypatch.setitem(recipe.RECIPES, "lite", quick)
    # blobs have no landmarks dlib would find: a fixed shape, nudged by each face's brightness
    template = np.random.default_rng(1).uniform(0.25, 0.75, (68, 2)).astype("float32")
    monkeypatch.setattr(
        "age_cgan.prototypes.landmarks.all_landmarks",
        lambda f, *a, **k: template[None] + (f.mean(axis=(1, 2, 3)) / 2550.0)[:, None, None])
    base = TrainConfig(run=str(tmp_path / "run"), data=str(faces), progress=False,
                       image_size=32, grid_rows=2, data_cache=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="faces of at least 128 px are needed for the age "
                       "prototypes, and data .*UTKFace holds 32 px faces"):
        recipe.format_recipe_plan("lite", base)  # the run's 32 px faces: never upscaled
    base = base.replace(prototype_data=str(faces128))
    plan = recipe.format_recipe_plan("lite", base)
    assert "recipe lite: 6 stages" in plan and "expected" in plan and "arch=lite" in plan
    assert "before stage aging, the age prototypes" in plan
    assert not (tmp_path / "run").exists()  # the dry run writes nothing
    record = recipe.run_recipe("lite", base)
    assert set(record["stages"]) == {"1", "2", "fr", "3", "age", "aging", "prototypes"}
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["default_method"] == "prototype" and "prototype_strengths" in config
    from age_cgan.aging import AgingModels

    models = AgingModels.from_run(tmp_path / "run")
    assert models.default_method() == ("prototype", None)
    assert models.age_faces(models_faces(32), [0, 5], "prototype").shape == (2, 6, 32, 32, 3)
    assert all(s["wall_seconds"] > 0 for s in record["stages"].values())
    models = sorted(p.name for p in (tmp_path / "run" / "models").iterdir())
    assert models == ["age_estimator.keras", "aging_discriminator.keras", "aging_network.keras",
                      "discriminator.keras", "encoder.keras", "face_recognizer.keras",
                      "generator.keras"]
    # the same command again refuses (checkpoints exist); with --resume it passes over
    # the finished stages and adds their (short) times
    from age_cgan.runs import RunFolderError

    with pytest.raises(RunFolderError):
        recipe.run_recipe("lite", base)
    again = recipe.run_recipe("lite", base.replace(resume=True))
    assert again["total_wall_seconds"] >= record["total_wall_seconds"]


def test_every_planned_stage_is_checked_before_the_first_trains(tmp_path, capsys):
    """No hour of stage 1 before stage fr refuses: --recipe and --stage all check the
    descriptors (and every earlier network) first, and --dry-run says the same one line."""
    from age_cgan.cli.train import main

    tiny_faces = make_face_folder(tmp_path / "UTKFace", count=80, size=32)  # the recipe's batch
    run = tmp_path / "run"
    common = ["--data", str(tiny_faces), "--run", str(run), "--data-cache",
              str(tmp_path / "cache"), "--image-size", "32", "--no-progress"]
    for argv in (["--recipe", "lite"], ["--recipe", "lite", "--dry-run"],
                 ["--stage", "all", "--batch-size", "4"],
                 ["--stage", "all", "--batch-size", "4", "--dry-run"]):
        assert main(argv + common) == 1, argv
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1, error
        assert "stage fr distils dlib's descriptors" in error
        assert (f"`python -m age_cgan.data prepare UTKFACE_DIR {tiny_faces} --size 32 "
                "--descriptors --overwrite`") in error and "--fr-teacher" in error
        assert not (run / "stage1").exists() and not (run / "models").exists(), argv
    # a recipe's own stages: the default method's networks with the shipped settings, on 128 px
    # faces for the 128 px stage aging and the prototypes, refused on the run's 32 px ones
    assert main(["--recipe", "lite", "--stage", "network", "--dry-run"] + common) == 1
    error = capsys.readouterr().err.strip()
    assert error == (f"train.py: error: faces of at least 128 px are needed for stage aging at "
                     f"--aging-size 128, and --data {tiny_faces} holds 32 px faces (they would "
                     "be upscaled): give --prototype-data a folder of 128 px faces, made with "
                     "`python -m age_cgan.data prepare UTKFACE_DIR ~/data/utkface128 --size 128`")
    few = make_face_folder(tmp_path / "few128", count=10, size=128)
    assert main(["--recipe", "lite", "--stage", "network", "--dry-run", "--prototype-data",
                 str(few)] + common) == 1
    error = capsys.readouterr().err.strip()  # a dry run that says yes is a run that finishes
    assert len(error.splitlines()) == 1 and ("--batch-size 16 is larger than the 9 training "
                                             "faces stage aging at --aging-size 128 draws from "
                                             "in --prototype-data") in error
    faces128 = make_face_folder(tmp_path / "faces128", count=132, size=128)
    assert main(["--recipe", "lite", "--stage", "network", "--dry-run", "--prototype-data",
                 str(faces128)] + common) == 0
    out = capsys.readouterr().out
    assert "recipe lite: 2 stages" in out and "stage age:" in out and "stage aging:" in out
    assert "batch_size=16" in out and "aging_size=128" in out and "stage 1:" not in out
    # a stage whose earlier networks are missing and not planned: refused, naming the group
    assert main(["--stage", "aging", "--dry-run"] + common) == 1
    error = capsys.readouterr().err
    assert "`python train.py --stage age --run" in error and "--stage network" in error


def test_the_demo_trains_both_methods_and_ages_the_portrait(tiny_faces, tmp_path, capsys):
    from age_cgan.cli.demo import main

    run = tmp_path / "demo"
    assert main(["--data", str(tiny_faces), "--run", str(run), "--steps", "1",
                 "--batch-size", "4", "--image-size", "32"]) == 0
    out = capsys.readouterr().out
    assert f"demo: wrote {run / 'aged.png'} (--method network)" in out
    assert f"demo: wrote {run / 'aged_age_cgan.png'} (--method none)" in out
    assert {p.name for p in (run / "models").iterdir()} >= {
        "age_estimator.keras", "aging_network.keras", "encoder.keras", "generator.keras"}
