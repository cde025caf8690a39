"""Stage fr: its losses by hand, its batches, and real training steps (tiny, CPU)."""

import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

from age_cgan.ages import PAPER_BINS
from age_cgan.data.dataset import FaceDataset
from age_cgan.networks import L2Normalize, build_face_recognizer
from age_cgan.runs import RunFolder, RunFolderError
from age_cgan.training import face_recognizer as frt
from age_cgan.backend import Step, Update
from age_cgan.training import train_face_recognizer

RNG = np.random.default_rng(0)


def unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def numpy(x):
    return keras.ops.convert_to_numpy(x)


# --------------------------------------------------------------------------- losses


def test_distillation_losses_by_hand():
    t = unit(RNG.normal(size=(4, 128)))
    ones = np.ones(4, np.float32)
    assert numpy(frt.cosine_distillation(t, t, ones)) == pytest.approx(0, abs=1e-6)
    assert numpy(frt.cosine_distillation(-t, t, ones)) == pytest.approx(2, abs=1e-6)
    # rows without a target do not count
    mixed = np.concatenate([t[:2], -t[2:]])
    assert numpy(frt.cosine_distillation(mixed, t, np.array([1, 1, 0, 0], np.float32))) == \
        pytest.approx(0, abs=1e-6)
    assert numpy(frt.relational_distillation(t, t, ones)) == pytest.approx(0, abs=1e-5)
    rotated = t @ np.linalg.qr(RNG.normal(size=(128, 128)))[0].astype(np.float32)
    assert numpy(frt.relational_distillation(rotated, t, ones)) == pytest.approx(0, abs=1e-4)
    assert numpy(frt.relational_distillation(t * 0, t, ones)) > 0.5


def test_batch_hard_triplet_by_hand():
    a, b = unit([[1, 0] + [0] * 126]), unit([[0, 1] + [0] * 126])
    apart = np.concatenate([a, a, b, b])
    ids = np.array([0, 0, 1, 1], np.int32)
    assert numpy(frt.batch_hard_triplet(apart, ids, 0.2)) == pytest.approx(0, abs=1e-5)
    mixed = np.concatenate([a, b, a, b])  # each person's two faces far apart, strangers equal
    assert numpy(frt.batch_hard_triplet(mixed, ids, 0.2)) == pytest.approx(np.sqrt(2) + 0.2, 1e-4)
    unknown = np.array([-1, -1, -1, -1], np.int32)
    assert numpy(frt.batch_hard_triplet(mixed, unknown, 0.2)) == 0


def test_teacher_targets_are_centred_unit_vectors():
    raw = RNG.normal(size=(10, 128)).astype(np.float32) * 0.1 + 1.0  # a shared direction
    found = np.array([True] * 9 + [False])
    teacher = frt.Teacher.from_descriptors(raw, found, np.ones(10, bool))
    norms = np.linalg.norm(teacher.targets, axis=1)
    np.testing.assert_allclose(norms[:9], 1, atol=1e-5)
    assert norms[9] == 0
    np.testing.assert_allclose(teacher.mean, raw[:9].mean(0), atol=1e-6)
    assert abs(np.mean(teacher.targets[:9] @ unit(raw[:9].mean(0)))) < 0.2  # the shared part gone
    centred = raw[:9] - raw[:9].mean(0)
    assert teacher.scale == pytest.approx(np.linalg.norm(centred, axis=1).mean(), rel=1e-5)


def test_batches_pair_people_when_identities_are_known():
    images = RNG.integers(0, 255, (20, 8, 8, 3), dtype=np.uint8)
    identity = np.array([i // 2 for i in range(12)] + [-1] * 8, np.int32)
    targets = unit(RNG.normal(size=(20, 128)))
    batches = frt.FRBatches(images, np.arange(20), targets, np.ones(20, bool), identity, 8, seed=1)
    batch = batches.next()
    assert batch["image"].shape == (8, 8, 8, 3) and batch["image"].dtype == np.float32
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    pairs = batch["identity"][:4]
    assert pairs[0] == pairs[1] and pairs[2] == pairs[3] and pairs[0] >= 0
    state = batches.get_state()
    following = batches.next()
    batches.set_state(state)
    np.testing.assert_array_equal(batches.next()["image"], following["image"])


def test_agreement_with_the_teacher_by_hand():
    t = RNG.normal(size=(30, 128))
    perfect = frt.agreement_with_teacher(t * 0.5, t)  # distances scaled: same geometry
    assert perfect["distance_pearson"] == pytest.approx(1.0)
    assert perfect["nn_in_teacher_top5"] == 1.0
    noise = frt.agreement_with_teacher(RNG.normal(size=(30, 128)), t)
    assert abs(noise["distance_pearson"]) < 0.3


# --------------------------------------------------------------------------- training steps


def test_the_real_fr_training_step_lowers_its_loss_and_keeps_unit_norm():
    """InceptionResNetV2 FR (random backbone, 75 px) on one fixed batch, a few Adam steps."""
    keras.utils.set_random_seed(0)
    model = build_face_recognizer(image_size=32, weights=None, input_size=75)
    batch = {
        "image": RNG.uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32),
        "target": unit(RNG.normal(size=(4, 128))),
        "has_target": np.ones(4, np.float32),
        "identity": np.array([0, 0, 1, -1], np.int32),
    }
    step = Step({"face_recognizer": model}, {"face_recognizer": keras.optimizers.Adam(1e-3)},
                [Update("face_recognizer", frt.make_fr_loss())], jit=False)
    losses = [float(step(batch)["fr/loss/total"]) for _ in range(4)]
    step.sync()
    assert losses[-1] < losses[0], losses
    embedding = numpy(model(batch["image"], training=False))
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)


def test_batch_norm_recalibration_stores_the_mean_of_batch_statistics():
    image = keras.Input((4, 4, 3))
    bn = keras.layers.BatchNormalization(momentum=0.99)
    model = keras.Model(image, keras.layers.GlobalAveragePooling2D()(bn(image)))
    batches = iter([RNG.normal(loc, 1.0, (8, 4, 4, 3)).astype(np.float32) for loc in (1, 2, 6)])
    seen = []

    def next_batch():
        seen.append(next(batches))
        return {"image": seen[-1]}

    assert frt.recalibrate_batch_norm(model, next_batch, 3) == 1
    expected = np.mean([b.mean(axis=(0, 1, 2)) for b in seen], axis=0)
    np.testing.assert_allclose(numpy(bn.moving_mean), expected, rtol=1e-5)
    assert bn.momentum == 0.99  # restored


def tiny_model(size=16):
    image = keras.Input((size, size, 3), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(image)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(128, name="embedding")(x)
    return keras.Model(image, L2Normalize(name="l2_normalize")(x), name="face_recognizer")


def tiny_dataset(tmp_path, n=24, size=16, identities=False):
    """Random faces on disk with a dlib_descriptors.npz beside them (a stand-in teacher)."""
    folder = tmp_path / "faces"
    folder.mkdir(exist_ok=True)
    images = RNG.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    paths = []
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")
        paths.append(str(folder / f"{i}.png"))
    np.savez(folder / "dlib_descriptors.npz", filenames=np.array([f"{i}.png" for i in range(n)]),
             descriptors=RNG.normal(size=(n, 128)).astype(np.float32))
    ids = np.array([str(i // 3) for i in range(n)]) if identities else np.array([""] * n)
    ages = np.full(n, 30, np.float32)
    return FaceDataset(images, ages, PAPER_BINS.category(ages), ids, np.array(paths),
                       np.arange(n) % 4 == 0, PAPER_BINS, None)


@pytest.mark.parametrize("identities", [False, True])
def test_train_face_recognizer_saves_a_loadable_model_and_summary(tmp_path, identities):
    dataset = tiny_dataset(tmp_path, identities=identities)
    run = RunFolder(tmp_path / "run")
    summary = train_face_recognizer(run.path, dataset, steps=6, batch_size=8,
                                        learning_rate=1e-2, model=tiny_model(), log_every=2,
                                        eval_faces=6, progress=False)
    assert summary["teacher"] == "dlib_face_recognition_resnet_model_v1"
    assert summary["identities_used"] is identities
    assert ("fr/loss/triplet" in summary["final_losses"]) is identities
    assert summary["agreement"]["faces"] == 6 and "initial" in summary
    assert summary["final_losses"]["fr/embedding_norm"] == pytest.approx(1.0, abs=1e-5)
    stored = json.loads((run.stage_dir("fr") / "summary.json").read_text())
    assert stored["steps_done"] == 6
    loaded = run.load_model("face_recognizer")
    out = numpy(loaded(np.zeros((2, 16, 16, 3), np.float32)))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert len(open(run.stage_dir("fr") / "metrics.jsonl").read().splitlines()) == 3


def test_train_face_recognizer_resumes_and_refuses_to_overwrite(tmp_path):
    dataset = tiny_dataset(tmp_path)
    run = RunFolder(tmp_path / "run")
    args = dict(batch_size=8, model=tiny_model(), log_every=1, checkpoint_every=2, progress=False,
                measure_initial=False, eval_faces=4)
    train_face_recognizer(run.path, dataset, steps=4, **args)
    with pytest.raises(RunFolderError, match="resume"):
        train_face_recognizer(run.path, dataset, steps=6, **args)
    args["model"] = tiny_model()
    summary = train_face_recognizer(run.path, dataset, steps=6, resume=True, **args)
    steps = [json.loads(line)["step"] for line in open(run.stage_dir("fr") / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6] and summary["steps_done"] == 6


def test_without_teacher_or_identities_it_says_what_is_missing(tmp_path):
    dataset = tiny_dataset(tmp_path)
    os.remove(tmp_path / "faces" / "dlib_descriptors.npz")
    with pytest.raises(ValueError, match="dlib_descriptors.npz"):
        train_face_recognizer(tmp_path / "run", dataset, steps=1, batch_size=4,
                                  model=tiny_model(), progress=False)
