"""``python -m age_cgan.data prepare UTKFACE_DIR OUT_DIR``: the public UTKFace download (200x200
chips named AGE_GENDER_RACE_DATETIME.jpg.chip.jpg, a few names malformed) as the 64 px folder the
training commands read, on a small fixture made here (no real faces)."""

import os

import numpy as np
import pytest
from PIL import Image

from age_cgan.data import find_source, load_dataset
from age_cgan.data.__main__ import main as data_main
from age_cgan.data.images import decode_face

VALID = {"25_0_0_20170116174525125.jpg.chip.jpg": 25, "61_1_2_20170109142408075.jpg.chip.jpg": 61,
         "3_1_4_20161219203650636.jpg.chip.jpg": 3, "80_0_1_20170111201008732.jpg.chip.jpg": 80}
#: Raw UTKFace's own kinds of bad names: a stray space, a missing field.
MALFORMED = ["24_0_1_20170116220224657 .jpg.chip.jpg", "39_1_20170116174525125.jpg.chip.jpg"]
UNREADABLE = "45_0_3_20170119171131544.jpg.chip.jpg"  # a good name, not a JPEG


@pytest.fixture
def download(tmp_path):
    """A folder as UTKFace.tar.gz unpacks: UTKFace/ with 200x200 chips, two malformed names and
    an unreadable file; returns the folder holding UTKFace/."""
    folder = tmp_path / "download" / "UTKFace"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:200, 0:200] / 200
    for name in [*VALID, *MALFORMED]:
        blob = np.exp(-((yy - 0.5) ** 2 + (xx - 0.5) ** 2) * 6)[..., None] * rng.uniform(80, 220, 3)
        Image.fromarray(blob.clip(0, 255).astype(np.uint8)).save(folder / name, quality=90)
    (folder / UNREADABLE).write_bytes(b"this is not a JPEG " * 30)
    return folder.parent


def test_prepare_makes_the_folder_the_training_commands_read(download, tmp_path, capsys):
    out = tmp_path / "utkface64"
    assert data_main(["prepare", str(download), str(out), "--size", "64"]) == 0
    printed = capsys.readouterr()
    assert "preparing faces" in printed.err  # the progress bar
    assert sorted(os.listdir(out)) == sorted(VALID)  # the same names: the labels
    for name in VALID:
        with Image.open(out / name) as face:
            assert (face.format, face.mode, face.size) == ("JPEG", "RGB", (64, 64))
            written = np.asarray(face).astype(int)
        expected = decode_face(str(download / "UTKFace" / name), 64, draft=False).astype(int)
        assert np.abs(written - expected).mean() < 2  # the resized face, JPEG q95
    summary = printed.out
    assert f"{len(VALID)} faces at 64x64 px" in summary and "from 7 image files" in summary
    assert "skipped 3" in summary
    assert "unparsable name" in summary and all(name in summary for name in MALFORMED)
    assert "not an image" in summary and UNREADABLE in summary
    assert f"python train.py --data {out}" in summary

    source = find_source(out)  # what train.py --data OUT_DIR opens
    assert source.kind == "utkface"
    dataset = load_dataset(out, image_size=64, cache_dir=False, progress=False)
    assert len(dataset) == len(VALID) and dataset.summary.skipped.total == 0
    assert sorted(dataset.ages.tolist()) == sorted(VALID.values())


def test_prepare_never_overwrites_without_the_flag(download, tmp_path, capsys):
    out = download / "utkface32"  # inside the download's folder: not taken for a second source
    assert data_main(["prepare", str(download), str(out), "--size", "32", "--no-progress"]) == 0
    before = {name: (out / name).stat().st_mtime_ns for name in os.listdir(out)}
    capsys.readouterr()
    assert data_main(["prepare", str(download), str(out), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert {name: (out / name).stat().st_mtime_ns for name in os.listdir(out)} == before
    assert data_main(["prepare", str(download), str(out), "--size", "48", "--overwrite",
                      "--no-progress"]) == 0
    with Image.open(out / next(iter(VALID))) as face:
        assert face.size == (48, 48)
    originals = download / "UTKFace"
    assert data_main(["prepare", str(originals), str(originals), "--overwrite"]) == 2
    assert "the UTKFace folder itself" in capsys.readouterr().err
    with Image.open(originals / next(iter(VALID))) as original:
        assert original.size == (200, 200)


def test_prepare_refuses_what_is_not_utkface(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (200, 200)).save(tmp_path / "photos" / "holiday.jpg")
    assert data_main(["prepare", str(tmp_path / "photos"), str(tmp_path / "out")]) == 2
    assert "AGE_GENDER_RACE_DATETIME.jpg.chip.jpg" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_prepare_descriptors_are_the_stage_fr_teacher(download, tmp_path):
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    from age_cgan.judges import teacher_descriptors

    out = tmp_path / "utkface64"
    assert data_main(["prepare", str(download), str(out), "--descriptors", "--no-progress"]) == 0
    with np.load(out / "dlib_descriptors.npz") as stored:
        assert stored["filenames"].tolist() == sorted(VALID)
        assert stored["descriptors"].shape == (len(VALID), 128)
    descriptors, found = teacher_descriptors(sorted(str(out / n) for n in VALID), image_size=64)
    assert found.all() and np.isfinite(descriptors).all()
