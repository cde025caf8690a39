"""The user's path judged: labelled photo folders, the photo two-sample test and its controls,
the blind viewer's sheets, key and scorer, the crop's padding and the shape warp's limits."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from age_cgan.ages import AgeBins
from age_cgan.evaluation import photos as P
from age_cgan.evaluation import viewer
from age_cgan.evaluation.metrics import photo_realism as R
from conftest import REPO


def _faces(n, side=64, seed=0, smooth=4.0):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(128, 60, (n, side, side, 3)), (0, 1, 1, 0))
    base = ndimage.gaussian_filter(rng.normal(128, 40, (n, side, side, 1)), (0, smooth, smooth, 0))
    return np.clip(0.5 * noise + 0.5 * base, 0, 255).astype(np.uint8)


def test_photo_rows_from_names_and_from_a_manifest(tmp_path):
    for name in ("25_1_0_2017.jpg.chip.jpg", "70_0_2_2017.jpg", "notes.txt", "x_1.jpg"):
        (tmp_path / name).write_bytes(b"")
    rows = P.photo_rows(tmp_path)
    assert [(r.path.name, r.age, r.gender) for r in rows] == [
        ("25_1_0_2017.jpg.chip.jpg", 25.0, 1), ("70_0_2_2017.jpg", 70.0, 0)]
    with pytest.raises(P.PhotoSetError, match="needs a manifest.csv"):
        P.photo_rows(tmp_path, use="report")
    (tmp_path / "images").mkdir()
    with open(tmp_path / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "age", "gender", "use"])
        writer.writerows([["a.jpg", 30, 0, "choose"], ["b.jpg", 65, 1, "report"]])
    rows = P.photo_rows(tmp_path, use="report")
    assert [(r.path, r.age, r.gender) for r in rows] == [(tmp_path / "images" / "b.jpg", 65.0, 1)]
    with pytest.raises(P.PhotoSetError, match="no labelled photos"):
        P.photo_rows(tmp_path, use="nothing")


def test_two_sample_test_tells_a_blur_and_not_a_second_draw():
    faces = _faces(120)
    categories = np.arange(120) % 6
    changed, labels, groups = R.control_samples(faces, categories, R.blurred)
    assert labels.sum() == 60 and not np.array_equal(changed[labels == 1], faces[labels == 1])
    sharp = R.two_sample_accuracy(R.image_features(changed), labels, groups, seeds=1)
    assert sharp["accuracy"] >= 0.9
    same, labels, groups = R.control_samples(faces, categories, lambda f: f)
    chance = R.two_sample_accuracy(R.image_features(same), labels, groups, seeds=2)
    assert chance["accuracy"] <= 0.7


def test_controls_change_what_they_name():
    faces = _faces(6, side=96)
    cast = R.colour_cast(faces)
    luma = np.array([0.299, 0.587, 0.114])
    assert np.abs(cast.astype(float) @ luma - faces.astype(float) @ luma).mean() < 2.0  # hue
    assert np.abs(cast.astype(float) - faces).mean() > 5.0
    warped = R.jaw_warp(faces)
    top, bottom = slice(0, 30), slice(60, 90)
    assert np.array_equal(warped[:, top], faces[:, top]) or \
        np.abs(warped[:, top].astype(float) - faces[:, top]).mean() < 0.5  # the upper face stays
    assert np.abs(warped[:, bottom].astype(float) - faces[:, bottom]).mean() > 0.5


def test_the_conditional_test_compares_within_a_target():
    # two strata whose samples differ in opposite directions: pooled, a linear classifier
    # cannot tell them; per stratum it can
    faces = _faces(160, seed=3)
    dark = np.clip(faces.astype(int) - 40, 0, 255).astype(np.uint8)
    strata = np.arange(160) % 2
    labels = (np.arange(160) // 2) % 2
    images = np.where(((labels == 1) ^ (strata == 1))[:, None, None, None], dark, faces)
    features = R.image_features(images)
    groups = np.arange(160)
    assert R.two_sample_accuracy(features, labels, groups, seeds=1, strata=strata)[
        "accuracy"] > 0.9


def test_viewer_pairs_match_gender_and_refuse_too_many(tmp_path):
    bins = AgeBins.parse(None)
    rows = [P.PhotoRow(tmp_path / f"{i}.jpg", age, gender) for i, (age, gender) in enumerate(
        [(25, 0), (33, 1), (27, 1), (70, 1), (65, 0), (80, 0), (8, 0)])]
    pairs = viewer.draw_pairs(rows, bins, 5, 2, seed=0)
    assert len(pairs) == 2
    for aged, real in pairs:
        assert bins.category(aged.age) in (1, 2) and bins.category(real.age) == 5
        assert aged.gender == real.gender
    with pytest.raises(viewer.ViewerError, match="--pairs 4: only 3 photos of 60\\+"):
        viewer.draw_pairs(rows, bins, 5, 4)
    assert viewer.source_categories(0, 6) == [3, 4, 5]


def test_viewer_sheet_answers_and_score():
    faces = _faces(6, side=80)
    page = viewer.sheet([(faces[0], faces[1]), (faces[2], faces[3]), (faces[4], faces[5])], 1)
    assert page.dtype == np.uint8 and page.shape[1] > 4 * viewer.SHEET_SIDE
    answers = viewer.parse_answers("1: A the mouth\n2. b\n**3** -\nPair 4: B\n")
    assert answers == {1: "A", 2: "B", 4: "B"}
    result = viewer.score({"real_side": {"1": "A", "2": "A", "3": "B", "4": "B"}}, answers)
    assert (result["named_real"], result["pairs"], result["missing"]) == (2, 4, [3])
    with pytest.raises(viewer.ViewerError, match="one line per pair"):
        viewer.parse_answers("I could not tell")


def test_a_crop_past_the_photo_edge_does_not_streak():
    from age_cgan.faces import Box, crop_face

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (120, 120, 3)).astype(np.uint8)
    crop = crop_face(Image.fromarray(photo), Box(60, 10, 160, 110), 100)
    outside = crop[:, 70:].astype(float)  # past the photo's right edge
    # an edge repeated would give identical columns (streaks); here columns differ
    assert np.abs(np.diff(outside, axis=1)).mean() > 0.5
    assert np.array_equal(crop[:, :55], photo[10:110, 60:115])  # the photo's part untouched


def test_the_shape_warp_never_folds():
    from age_cgan.prototypes.fields import folding_safe

    side = 64
    field = np.zeros((side, side, 2), np.float32)
    field[..., 1] = -30 * np.sin(np.linspace(0, np.pi, side))[:, None]  # rows crossing over
    assert (1 + np.gradient(field[..., 1], axis=0)).min() < 0  # folds as it is
    safe = folding_safe(field, min_det=0.5, max_shift=0.5)
    assert (1 + np.gradient(safe[..., 1], axis=0)).min() >= 0.5
    assert np.abs(safe).max() > 0.2 * np.abs(field).max()  # scaled back, not dropped
    assert np.abs(folding_safe(field * 0 + 10, max_shift=0.04)).max() <= 0.04 * side + 1e-4


def test_viewer_tool_and_photo_evaluation_on_real_photos(tmp_path, shared_data):
    pytest.importorskip("face_recognition_models")
    photos = shared_data / "utkface200test"
    out = tmp_path / "viewer"
    run = [sys.executable, str(REPO / "tools" / "viewer_pairs.py")]
    made = subprocess.run(run + ["make", str(photos), "--use", "choose", "--target", "60+",
                                 "--pairs", "3", "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-2000:]
    assert sorted(p.name for p in (out / "sheets").iterdir()) == ["sheet_01.png"]
    key = json.loads((out / "key.json").read_text())
    assert len(key["real_side"]) == 3
    answers = tmp_path / "answers.txt"
    answers.write_text("\n".join(f"{k}: {v}" for k, v in key["real_side"].items()))
    scored = subprocess.run(run + ["score", str(out / "key.json"), str(answers)],
                            capture_output=True, text=True)
    assert "named in 3 of 3 pairs (100%" in scored.stdout
    again = subprocess.run(run + ["make", str(photos), "--target", "60+", "--out", str(out)],
                           capture_output=True, text=True)
    assert again.returncode != 0 and "--overwrite" in again.stderr
