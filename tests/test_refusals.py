"""Nothing lost, nothing silent: every command refuses, in one line that names the option and
what to do, before any work, what would replace a file it did not make, upscale small faces,
or fail hours later; the files it reads are checked for range as well as shape."""

import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from age_cgan.cli.words import cli_message
from conftest import REPO, make_face_folder


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


# --------------------------------------------------------------------------- the prototype build


def build(argv, capsys) -> tuple[int, str]:
    from age_cgan.prototypes.__main__ import main

    rc = main(["build", *map(str, argv), "--no-progress"])
    return rc, one_line(capsys.readouterr().err)


def test_the_prototype_build_checks_its_output_before_any_work(tmp_path, capsys):
    data = make_face_folder(tmp_path / "faces64", count=24, size=64)
    (data / "manifest.csv").write_text("filename,age\n")
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("mine")
    (tmp_path / "empty").mkdir()
    assert build([data, unrelated], capsys) == (
        2, f"error: OUT {unrelated} exists: pass --overwrite to replace it, or choose another OUT")
    assert build([data, tmp_path / "empty"], capsys) == (
        2, f"error: OUT {tmp_path / 'empty'} is a folder: give the file to write, e.g. "
        f"{tmp_path / 'empty' / 'prototypes.npz'}")
    for flags in ([], ["--overwrite"]):  # never into the data folder, even when told
        rc, line = build([data, data / "manifest.csv", *flags], capsys)
        assert rc == 2 and "is inside the data folder" in line and "RUN/prototypes.npz" in line
    assert (data / "manifest.csv").read_text() == "filename,age\n"
    # --overwrite passes the output check; the faces are checked next (before the build)
    rc, line = build([data, unrelated, "--overwrite"], capsys)
    assert rc == 2 and line == (
        f"error: faces of at least 128 px are needed for the age prototypes, and DATA {data} "
        "holds 64 px faces (they would be upscaled): give DATA a folder of 128 px faces, made "
        "with `python -m age_cgan.data prepare UTKFACE_DIR ~/data/utkface128 --size 128`")
    assert unrelated.read_text() == "mine"
    few = make_face_folder(tmp_path / "few128", count=12, size=128)
    rc, line = build([few, tmp_path / "p.npz"], capsys)
    assert rc == 2 and line.startswith(
        "error: at least 15 training faces in every age category are needed for the age "
        f"prototypes, and DATA {few} has 0-18 ")
    assert not (tmp_path / "p.npz").exists()


def test_the_prototype_faces_need_a_group_that_can_be_balanced(tmp_path, capsys):
    """Enough faces in every category, but spread over ten race-and-gender groups so thinly
    that none has 15 in each: refused before the build, not averaged unbalanced in silence."""
    folder = tmp_path / "mixed128"
    folder.mkdir()
    face = Image.fromarray(np.full((128, 128, 3), 100, np.uint8))
    for i in range(132):
        age, gender, race = (5, 24, 35, 44, 55, 70)[i % 6], (i // 6) % 2, (i // 12) % 5
        face.save(folder / f"{age}_{gender}_{race}_2017010{i:04d}.jpg.chip.jpg")
    assert build([folder, tmp_path / "p.npz"], capsys) == (
        2, f"error: no race-and-gender group of DATA {folder} has 15 training faces in every age "
        "category, so the age prototypes could not be balanced: give DATA more faces (the whole "
        "UTKFace, made with `python -m age_cgan.data prepare UTKFACE_DIR ~/data/utkface128 "
        "--size 128`)")


def synthetic_prototypes(scale: float = 1.0):
    from age_cgan.prototypes import Prototypes

    rng = np.random.default_rng(0)
    return Prototypes(
        bins="0-18,19-29,30-39,40-49,50-59,60+",
        image=rng.uniform(0.2, 0.8, (6, 128, 128, 3)) * scale,
        band_magnitude=rng.uniform(0, 0.05, (6, 4, 64, 64)),
        colour_magnitude=rng.uniform(0, 0.2, (6, 64, 64)),
        shape=rng.uniform(0.1, 0.9, (6, 68, 2)), reference_shape=rng.uniform(0.1, 0.9, (68, 2)),
        meta={"source": "synthetic"})


def test_a_prototype_file_on_another_scale_is_refused_in_one_line(tmp_path):
    from age_cgan.prototypes import PrototypeFileError, Prototypes

    good = synthetic_prototypes().save(tmp_path / "good.npz")
    assert Prototypes.load(good).image.max() <= 1.0
    bad = synthetic_prototypes(255.0).save(tmp_path / "bad.npz")  # finite, the right shape
    with pytest.raises(PrototypeFileError) as refused:
        Prototypes.load(bad)
    line = one_line(cli_message(refused.value))
    assert line.startswith(f"{bad} holds values on another scale: image runs ")
    assert line.endswith("not 0 to 1; build it again with `python -m age_cgan.prototypes "
                         "build DATA OUT.npz`")


# --------------------------------------------------------------------------- a user's model folder


def test_a_model_folder_missing_a_file_is_told_what_to_copy_or_build(tmp_path, capsys):
    from age_cgan.cli.infer import main
    from age_cgan.examples import PORTRAIT
    from age_cgan.pretrained import DEFAULT_MODEL, PretrainedError, verify

    folder = tmp_path / "my_model"
    shutil.copytree(DEFAULT_MODEL, folder)
    (folder / "prototypes.npz").unlink()
    assert main([str(PORTRAIT), "--model", str(folder), "--out", str(tmp_path / "a.png")]) == 2
    line = one_line(capsys.readouterr().err)
    assert line == (
        f"infer.py: error: {folder / 'prototypes.npz'} is missing from the packaged model "
        f"{folder}: copy it back from the run {folder} was packaged from (RUN/prototypes.npz), "
        "or build one with `python -m age_cgan.prototypes build DATA FILE.npz` (DATA: 128 px "
        "faces) and pass --prototypes FILE.npz")
    assert "reinstall" not in line
    assert verify(folder, {"prototypes.npz"}) == folder  # --prototypes FILE replaces it
    (folder / "models" / "aging_network.keras").unlink()
    with pytest.raises(PretrainedError, match="RUN/models/aging_network.keras.*, or pass "
                       "aging_network='FILE.keras'"):
        verify(folder, set())
    with pytest.raises(PretrainedError) as page:  # the page takes no file in its place
        verify(folder)
    assert str(page.value).endswith(f"copy it back from the run {folder} was packaged from "
                                    "(RUN/models/aging_network.keras)")


# --------------------------------------------------------------------------- faces: size and count


def test_batches_and_sizes_are_checked_before_anything_trains(tmp_path, capsys):
    from age_cgan.cli.train import main

    small = make_face_folder(tmp_path / "ten", count=10, size=64)
    common = ["--run", str(tmp_path / "run"), "--data-cache", str(tmp_path / "cache"),
              "--no-progress", "--dry-run"]
    assert main(["--stage", "age", "--batch-size", "16", "--data", str(small)] + common) == 1
    assert one_line(capsys.readouterr().err) == (
        f"train.py: error: --batch-size 16 is larger than the 9 training faces stage age draws "
        f"from in --data {small}: pass --batch-size 9 or less, or more data")
    assert main(["--stage", "1", "--image-size", "128", "--data", str(small)] + common) == 1
    assert one_line(capsys.readouterr().err) == (
        "train.py: error: faces of at least 128 px are needed for --image-size 128, and --data "
        f"{small} holds 64 px faces (they would be upscaled): give --data a folder of 128 px "
        "faces, made with `python -m age_cgan.data prepare UTKFACE_DIR ~/data/utkface128 "
        "--size 128`")
    assert not (tmp_path / "run").exists()


def test_the_sampler_names_the_batch_option():
    from age_cgan.data import BatchSampler

    faces = np.zeros((9, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError) as refused:
        BatchSampler(faces, np.zeros(9, np.int64), 6, batch_size=16)
    assert cli_message(refused.value) == ("--batch-size 16 needs 1 to 9 (the faces to draw "
                                          "from): pass --batch-size 9 or less, or more faces")


def test_evaluate_refuses_to_upscale_and_to_replace_what_it_did_not_write(tmp_path, capsys):
    from age_cgan.cli.evaluate import main
    from age_cgan.pretrained import DEFAULT_MODEL

    data = make_face_folder(tmp_path / "faces64", count=24, size=64)
    assert main(["--run", str(DEFAULT_MODEL), "--data", str(data), "--side", "128",
                 "--export-faces", str(tmp_path / "f.npz"), "--no-progress"]) == 1
    assert one_line(capsys.readouterr().err) == (
        "evaluate.py: error: faces of at least 128 px are needed for --side 128, and --data "
        f"{data} holds 64 px faces (they would be upscaled): give --data a folder of 128 px "
        "faces, made with `python -m age_cgan.data prepare UTKFACE_DIR ~/data/utkface128 "
        "--size 128`")
    mine = tmp_path / "mine.npz"
    mine.write_bytes(b"a user's file")
    assert main(["--run", str(DEFAULT_MODEL), "--export-faces", str(mine)]) == 1
    assert one_line(capsys.readouterr().err) == (
        f"evaluate.py: error: --export-faces {mine} exists and is not a faces file evaluate.py "
        "wrote: choose another FILE.npz (it is not replaced)")
    assert mine.read_bytes() == b"a user's file"


def test_the_survey_reads_side_and_counts_without_decoding(tmp_path):
    from age_cgan.data.survey import survey

    found = survey(make_face_folder(tmp_path / "f", count=24, size=40))
    assert found.side == 40 and len(found.train_counts) == 6
    assert 20 <= found.train_faces < 24  # the test split left out, as load_dataset splits


# --------------------------------------------------------------------------- other outputs


def test_curves_and_packaging_keep_files_they_did_not_write(tmp_path, capsys):
    from age_cgan.curves import main as curves

    stage = tmp_path / "run" / "stage1"
    stage.mkdir(parents=True)
    (stage / "metrics.jsonl").write_text('{"step": 1, "stage1/loss/d": 0.5}\n'
                                         '{"step": 2, "stage1/loss/d": 0.4}\n')
    photo = tmp_path / "photo.png"
    Image.new("RGB", (8, 8)).save(photo)
    assert curves([str(tmp_path / "run"), "--out", str(photo)]) == 1
    assert one_line(capsys.readouterr().err) == (
        f"curves: error: {photo} exists and was not written by age-cgan: pass --overwrite to "
        "replace it, or choose another --out")
    assert Image.open(photo).size == (8, 8)
    for _ in range(2):  # its own earlier figure is replaced without asking
        assert curves([str(tmp_path / "run")]) == 0
    assert curves([str(tmp_path / "run"), "--out", str(photo), "--overwrite"]) == 0
    import subprocess

    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "x.txt").write_text("mine")
    result = subprocess.run([sys.executable, "tools/package_model.py", str(tmp_path / "run"),
                             "--out", str(tmp_path / "folder")], cwd=REPO, capture_output=True,
                            text=True)
    assert result.returncode == 1 and one_line(result.stderr) == (
        f"package_model.py: error: --out {tmp_path / 'folder'} holds files and is not a "
        "packaged model folder (no SHA256SUMS): choose an empty or new folder, or pass "
        "--overwrite to write into it")


# --------------------------------------------------------------------------- the page, the own age


def test_the_page_logs_a_refused_value_in_one_line(capsys):
    gr = pytest.importorskip("gradio")
    from age_cgan.app import logged

    def preprocess(payload):
        raise gr.Error(f"Value: {payload!r} (type: <class 'str'>) is not in the list of choices")

    with pytest.raises(gr.Error) as refused:
        logged(preprocess)("bogus")
    assert refused.value.print_exception is False  # Gradio prints no traceback for it
    assert one_line(capsys.readouterr().err) == (
        "age-cgan-app: refused a request: Value: 'bogus' (type: <class 'str'>) is not in the "
        "list of choices")
    assert logged(lambda payload: payload.upper())("ok") == "OK"


def test_the_years_shown_round_into_the_category_shown():
    from age_cgan.ages import PAPER_BINS, parse_ages

    assert PAPER_BINS.shown_years(29.4, 1) == 29
    assert PAPER_BINS.shown_years(29.6, 1) is None  # never "19-29 ... about 30 years"
    assert PAPER_BINS.shown_years(18.7, 0) is None  # nor "0-18 ... about 19 years"
    assert PAPER_BINS.shown_years(60.2, 5) == 60
    with pytest.raises(ValueError) as refused:
        parse_ages("20-30", PAPER_BINS)
    assert cli_message(refused.value).startswith("--ages: '20-30' is neither a category")
