"""Stage fr: train the face recogniser so that its 128-d embedding recognises people.

The tutorial's FR is an untrained Dense(128) on ImageNet features: a random projection
(reference.md). Here FR = ``networks.build_face_recognizer`` is trained offline by

* **distillation** from dlib's 128-d face descriptor (``dlib_descriptors.npz`` beside the faces,
  so no slow dlib pass): the embedding's cosine to the teacher's *centred*, L2-normalised
  descriptor, plus a relational term matching the batch's pairwise distances. Centring
  matters: raw dlib descriptors share one direction (mean cosine 0.91 to their mean on
  UTKFace), so a network that outputs that constant would already score 0.91 on raw targets;
  after centring, only what tells faces apart is left. Distances are preserved, up to scale:
  an FR distance of ``0.6 / teacher_scale`` (~1.0) plays the role of dlib's 0.6.
* **metric learning** where the data has identity labels (``FaceDataset.identities``, e.g.
  IMDB-Wiki names or a CSV identity column): a batch-hard triplet loss (Hermans et al. 2017)
  on half of each batch, drawn as pairs of faces of the same people.

Without ImageNet weights (none can be downloaded offline) the backbone is random, so it is
trained end to end; with a local weights file the backbone is frozen by default and only the
head (plus the last ``fr_train_backbone_layers`` layers) learns. ``FaceRecognizerStage`` is a
``Stage`` like the others (its own batches, teacher and losses are here), so the generic runner
trains, checkpoints and resumes it; written once on ``age_cgan.backend`` (Update/Step), so it
runs on TensorFlow or JAX. Its settings are ``TrainConfig``'s ``fr_*`` fields.

Outputs in the run folder: ``models/face_recognizer.keras`` (stage 3 and infer.py use it when
present), ``stagefr/checkpoint.npz`` (resume), ``stagefr/metrics.jsonl`` + TensorBoard events,
``stagefr/summary.json`` (teacher, settings, agreement with the teacher on held-out faces,
verification on pairs).
"""

from __future__ import annotations

import dataclasses
import time

import keras
import numpy as np
from keras import ops

from age_cgan import networks
from age_cgan.backend import BACKEND, Update
from age_cgan.data import normalize
from age_cgan.errors import AgeCganError, setting
from age_cgan.evaluation.metrics.teacher import agreement_with_teacher, centred_cosine
from age_cgan.evaluation.pairs import embed, verify_pairs
from age_cgan.files import atomic_path
from age_cgan.judges import (DLIB_MODEL_NAME, DLIB_THRESHOLD, TEACHER_FILE, find_teacher_file,
                             teacher_descriptors)
from age_cgan.runs import RunFolder, face_recognizer_weights, write_json_atomic
from age_cgan.training.stage import Stage

STAGE = "fr"
NETWORK = "face_recognizer"
MIN_INPUT_SIZE = 75  # InceptionResNetV2's smallest input


class NothingToLearn(AgeCganError, ValueError):
    """The faces have neither teacher descriptors nor identities to train FR on."""


# =========================================================================== losses


def _masked_mean(values, mask):
    mask = ops.cast(mask, "float32")
    return ops.sum(values * mask) / ops.maximum(ops.sum(mask), 1.0)


def pairwise_distances(x, epsilon=1e-12):
    """(B, D) -> (B, B) Euclidean distances (the epsilon keeps the gradient finite at 0)."""
    squares = ops.sum(ops.square(x), axis=-1)
    d2 = squares[:, None] + squares[None, :] - 2.0 * ops.matmul(x, ops.transpose(x))
    return ops.sqrt(ops.maximum(d2, 0.0) + epsilon)


def cosine_distillation(embedding, target, mask):
    """Mean (1 - cos) between embeddings and unit targets (B, D) over rows with ``mask`` = 1."""
    cos = ops.sum(networks.l2_normalize(embedding, 1e-12) * target, axis=-1)
    return _masked_mean(1.0 - cos, mask)


def relational_distillation(embedding, target, mask):
    """Mean squared difference of pairwise distances, embeddings vs targets, over pairs of
    distinct rows that both have a target."""
    valid = ops.cast(mask, "float32")
    pairs = valid[:, None] * valid[None, :] * (1.0 - ops.eye(ops.shape(valid)[0]))
    diff = pairwise_distances(embedding) - pairwise_distances(target)
    return _masked_mean(ops.square(diff), pairs)


def batch_hard_triplet(embedding, identity, margin=0.2):
    """Batch-hard triplet loss: for each anchor with a known identity (>= 0) that has a positive
    and a negative in the batch, relu(hardest positive - hardest negative + margin)."""
    identity = ops.cast(identity, "int32")
    known = ops.cast(identity >= 0, "float32")
    both = known[:, None] * known[None, :]
    equal = ops.cast(identity[:, None] == identity[None, :], "float32")
    not_self = 1.0 - ops.eye(ops.shape(identity)[0])
    positive = equal * both * not_self
    negative = (1.0 - equal) * both
    d = pairwise_distances(embedding)
    hardest_positive = ops.max(d * positive, axis=1)
    hardest_negative = ops.min(d + 1e4 * (1.0 - negative), axis=1)
    anchors = ops.cast((ops.sum(positive, 1) > 0) & (ops.sum(negative, 1) > 0), "float32")
    return _masked_mean(ops.relu(hardest_positive - hardest_negative + margin), anchors)


def make_fr_loss(distill_weight=1.0, relation_weight=1.0, identity_weight=1.0, margin=0.2):
    """The stage's loss ``(forward, batch) -> (loss, metrics)`` for ``backend.Update``.

    batch: image (B, S, S, 3) in [-1, 1]; target (B, 128) unit (zeros where unknown);
    has_target (B,) 0/1; identity (B,) int32, -1 where unknown.
    """
    def fr_loss(f, batch):
        embedding = f(NETWORK, batch["image"], training=True)
        distill = cosine_distillation(embedding, batch["target"], batch["has_target"])
        relation = relational_distillation(embedding, batch["target"], batch["has_target"])
        loss = distill_weight * distill + relation_weight * relation
        metrics = {"fr/loss/cosine": distill, "fr/loss/relational": relation}
        if identity_weight:
            triplet = batch_hard_triplet(embedding, batch["identity"], margin)
            loss = loss + identity_weight * triplet
            metrics["fr/loss/triplet"] = triplet
        norms = ops.sqrt(ops.sum(ops.square(embedding), axis=-1))
        metrics.update({"fr/loss/total": loss, "fr/embedding_norm": ops.mean(norms)})
        return loss, metrics

    return fr_loss


# =========================================================================== targets and batches


@dataclasses.dataclass(frozen=True)
class Teacher:
    """Per-row targets: unit vectors of the centred teacher descriptors (zeros where missing)."""

    targets: np.ndarray  # float32 (N, 128)
    found: np.ndarray  # bool (N,)
    mean: np.ndarray  # float32 (128,), the centring vector (training rows)
    scale: float  # mean norm of the centred descriptors: FR distance ~ dlib distance / scale
    raw: np.ndarray  # float32 (N, 128) dlib descriptors as given

    @classmethod
    def from_descriptors(cls, descriptors, found, train_rows) -> "Teacher":
        raw = np.asarray(descriptors, np.float32)
        found = np.asarray(found, bool)
        use = found & np.asarray(train_rows, bool)
        mean = raw[use].mean(0) if use.any() else np.zeros(raw.shape[1], np.float32)
        centred = raw - mean
        norms = np.linalg.norm(centred, axis=1, keepdims=True)
        targets = np.where(found[:, None], centred / np.maximum(norms, 1e-12), 0).astype(np.float32)
        scale = float(norms[use].mean()) if use.any() else 1.0
        return cls(targets, found, mean.astype(np.float32), scale, raw)


class FRBatches:
    """Seeded batches for stage fr from uint8 faces; flips on the fly.

    With identities (ints, -1 unknown) and ``pk`` true, the first half of a batch is pairs of
    faces of the same people (for the triplet loss), the rest random rows.
    """

    def __init__(self, images, rows, targets, has_target, identity, batch_size, seed=0,
                 flip=True, pk=True):
        self.images, self.rows = images, np.asarray(rows, np.int64)
        self.targets, self.has_target = targets, has_target.astype(np.float32)
        self.identity = identity.astype(np.int32)
        self.batch_size, self.flip = int(batch_size), bool(flip)
        if len(self.rows) < self.batch_size:
            raise ValueError(f"batch_size {batch_size} needs at least as many training faces; "
                             f"there are {len(self.rows)}")
        self.rng = np.random.default_rng(seed)
        groups = {}
        for row in self.rows[self.identity[self.rows] >= 0]:
            groups.setdefault(int(self.identity[row]), []).append(int(row))
        self.groups = [np.array(g) for g in groups.values() if len(g) >= 2] if pk else []

    def next(self) -> dict:
        n = self.batch_size
        chosen = []
        if self.groups and n >= 4:
            people = self.rng.choice(len(self.groups), min(n // 4, len(self.groups)), replace=False)
            for p in people:
                chosen.extend(self.rng.choice(self.groups[p], 2, replace=False))
        chosen = np.concatenate([np.array(chosen, np.int64),
                                 self.rng.choice(self.rows, n - len(chosen), replace=False)])
        images = np.take(self.images, chosen, axis=0)
        if self.flip:
            mirrored = self.rng.random(n) < 0.5
            images[mirrored] = images[mirrored, :, ::-1]
        return {"image": normalize(images), "target": self.targets[chosen],
                "has_target": self.has_target[chosen], "identity": self.identity[chosen]}

    def get_state(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


# =========================================================================== agreement
# (agreement_with_teacher, centred_cosine: age_cgan.evaluation.metrics.teacher)


def _held_out_report(model, dataset, teacher, rows, batch_size, pairs, pairs_limit, seed) -> dict:
    report = {}
    if len(rows):
        e = embed(model, dataset.images[rows], batch_size)
        report["held_out"] = {"cosine_to_target": centred_cosine(e, teacher.targets[rows]),
                              **agreement_with_teacher(e, teacher.raw[rows])}
    if pairs:
        report["pairs"] = verify_pairs(pairs, dataset.image_size, model, None, pairs_limit, seed,
                                       fr_threshold=DLIB_THRESHOLD / teacher.scale)
    return report


# =========================================================================== the stage


def _walk(layer):
    yield layer
    for child in getattr(layer, "layers", []):
        yield from _walk(child)


def recalibrate_batch_norm(model, next_batch, batches: int) -> int:
    """Re-estimate the moving statistics of the trainable BatchNorm layers as the plain mean
    over ``batches`` training-mode forward passes (no weight changes); returns the layers done.

    Why: with a backbone trained from scratch, the moving averages (momentum 0.99) still carry
    their initial values and early weights after a short run, so inference-mode embeddings
    (what stage 3 and the agreement figures use) differ from training-mode ones. Setting the
    momentum to 1 - 1/k on the k-th pass makes the stored statistics the exact running mean.
    """
    layers = [layer for layer in _walk(model)
              if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    if not layers or batches < 1:
        return 0
    saved = [layer.momentum for layer in layers]
    try:
        for k in range(1, batches + 1):
            for layer in layers:
                layer.momentum = 1.0 - 1.0 / k
            model(next_batch()["image"], training=True)
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum
    return len(layers)


def _backbone(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            return layer
    return None


def _freeze(model, train_backbone_layers: int) -> None:
    """Freeze the backbone except its last ``train_backbone_layers`` layers."""
    backbone = _backbone(model)
    if backbone is None:
        return
    if train_backbone_layers <= 0:
        backbone.trainable = False
        return
    backbone.trainable = True
    for layer in backbone.layers[:-train_backbone_layers]:
        layer.trainable = False


def _identity_ints(identities) -> np.ndarray:
    identities = np.asarray(identities, dtype=str)
    names, inverse = np.unique(identities, return_inverse=True)
    ids = inverse.astype(np.int32).ravel()
    if "" in names:
        ids[identities == ""] = -1
    return ids


def _targets(dataset, teacher_file, identity_weight, data=None):
    """The teacher (from the descriptor file) and integer identities of the dataset's rows;
    NothingToLearn (naming the command that makes the descriptors) when neither covers the
    training faces. ``data``: the faces' source as the command named it (for the message)."""
    found = teacher_descriptors(dataset.paths, teacher_file, dataset.image_size)
    if found is None:
        found = (np.zeros((len(dataset), 128), np.float32), np.zeros(len(dataset), bool))
    train_rows = ~dataset.is_test
    teacher = Teacher.from_descriptors(*found, train_rows)
    identity = _identity_ints(dataset.identities)
    use_identity = identity_weight > 0 and bool((identity[train_rows] >= 0).any())
    if not teacher.found[train_rows].any() and not use_identity:
        raise NothingToLearn(_no_teacher(teacher_file, data or "DATA", dataset.image_size))
    return teacher, identity, use_identity


def _no_teacher(teacher_file, data, size: int) -> str:
    """Stage fr's refusal without descriptors: what is missing and the command that makes it."""
    where = (f"{teacher_file} covers none of the training faces" if teacher_file else
             f"no {TEACHER_FILE} beside the faces of {data} covers them (or it describes "
             f"faces of another size than {size} px)")
    return (f"stage fr distils dlib's descriptors of the training faces, and {where}; the "
            "data has no identities either. Make them with `python -m age_cgan.data prepare "
            f"UTKFACE_DIR {data} --size {size} --descriptors --overwrite` (needs pip install "
            f"\"age-cgan[eval]\"; about an hour for UTKFace on 2 CPU cores), or name a "
            f"descriptor file with {setting('fr_teacher')}")


class FaceRecognizerStage(Stage):
    """Stage fr: FR distilled from the teacher's descriptors (and triplets on identities).

    Settings: ``TrainConfig``'s ``fr_*`` fields and ``lr_fr``; ``fr_weights`` None or "none"
    trains a random backbone end to end (``face_recognizer_weights``' default for this stage),
    a weights file is frozen but for the last ``fr_train_backbone_layers`` layers unless
    ``fr_freeze_backbone`` says otherwise. ``model``: a prebuilt image -> unit-embedding model
    instead of building one (tests). With several devices on TensorFlow each replica computes
    the relational and triplet terms over its own rows (they compare faces within a batch); on
    JAX, and for the cosine term, it is the whole batch's loss.
    """

    name = STAGE
    trains = (NETWORK,)

    @classmethod
    def check_data(cls, config, dataset) -> None:
        """Refuse data without descriptors (or identities) before any stage trains."""
        _targets(dataset, config.fr_teacher, config.fr_identity_weight, config.data)

    def __init__(self, config, run: RunFolder, dataset=None, model: keras.Model | None = None):
        self.teacher, self.identity, self.use_identity = _targets(
            dataset, config.fr_teacher, config.fr_identity_weight, config.data)
        weights = face_recognizer_weights(None, config.fr_weights, default="none")
        self.weights = None if weights == "none" else weights
        self.freeze = ((self.weights is not None) if config.fr_freeze_backbone is None
                       else bool(config.fr_freeze_backbone))
        self.prebuilt, self.initial, self.started = model, None, None
        super().__init__(config, run, dataset)
        held = np.flatnonzero(dataset.is_test & self.teacher.found)
        self.held = np.sort(np.random.default_rng(config.seed).permutation(held)
                            [:config.fr_eval_faces])
        if not config.fr_recalibrate_batches:
            self.before_final = None

    def build(self):
        c = self.config
        model = self.prebuilt or networks.build_face_recognizer(
            self.dataset.image_size, self.weights, c.fr_input_size, arch=c.arch)
        if self.freeze:
            _freeze(model, c.fr_train_backbone_layers)
        loss = make_fr_loss(c.fr_distill_weight, c.fr_relation_weight,
                            c.fr_identity_weight if self.use_identity else 0, c.fr_margin)
        optimizer = keras.optimizers.Adam(c.lr_fr, name="adam_face_recognizer")
        return {NETWORK: model}, {NETWORK: optimizer}, [Update(NETWORK, loss)]

    def make_sampler(self):
        train_rows = ~self.dataset.is_test & (self.teacher.found | (self.identity >= 0))
        return FRBatches(self.dataset.images, np.flatnonzero(train_rows), self.teacher.targets,
                         self.teacher.found, self.identity, self.config.batch_size,
                         self.config.seed, self.config.fr_flip, pk=self.use_identity)

    def next_batch(self):
        return self.sampler.next()

    def get_state(self) -> dict:
        return {"sampler": self.sampler.get_state(), "initial": self.initial}

    def set_state(self, state: dict) -> None:
        self.sampler.set_state(state["sampler"])
        self.initial = state.get("initial")

    def begin(self, resumed: bool) -> None:
        """Measure the starting point (a resumed stage has it in its checkpoint)."""
        if not resumed and self.config.fr_measure_initial and self.teacher.found.any():
            self.initial = self.report(with_pairs=False)
        self.started = time.perf_counter()

    def before_final(self):
        recalibrate_batch_norm(self.models[NETWORK], self.sampler.next,
                               self.config.fr_recalibrate_batches)

    def report(self, with_pairs: bool = True) -> dict:
        c = self.config
        return _held_out_report(self.models[NETWORK], self.dataset, self.teacher, self.held, 64,
                                c.fr_pairs if with_pairs else None, c.fr_pairs_limit, c.seed)

    def finish(self, history: list[dict]) -> dict:
        """Agreement with the teacher on held-out faces, written to ``stagefr/summary.json``
        with the teacher's centring vector (``teacher_mean.npy``)."""
        c, teacher = self.config, self.teacher
        train_seconds = time.perf_counter() - self.started
        report = self.report()
        found = bool(teacher.found.any())
        identity_weight = c.fr_identity_weight if self.use_identity else 0.0
        settings = {"steps": c.total_steps(STAGE, len(self.dataset.train())),
                    "batch_size": c.batch_size, "learning_rate": c.lr_fr,
                    "input_size": c.fr_input_size, "weights": self.weights or "none",
                    "freeze_backbone": self.freeze,
                    "train_backbone_layers": c.fr_train_backbone_layers if self.freeze else None,
                    "distill_weight": c.fr_distill_weight, "relation_weight": c.fr_relation_weight,
                    "identity_weight": identity_weight, "margin": c.fr_margin, "flip": c.fr_flip,
                    "recalibrate_batches": c.fr_recalibrate_batches, "seed": c.seed,
                    "backend": BACKEND, "train_faces": int(len(self.sampler.rows)),
                    "held_out_faces": int(len(self.held))}
        summary = {
            "teacher": DLIB_MODEL_NAME if found else None,
            "teacher_file": str(c.fr_teacher or find_teacher_file(self.dataset.paths))
            if found else None,
            "teacher_scale": teacher.scale,
            "teacher_equivalent_threshold": DLIB_THRESHOLD / teacher.scale,
            "identities_used": self.use_identity,
            "identity_weight": identity_weight,
            "settings": settings,
            "steps_done": settings["steps"],
            "train_seconds_this_call": train_seconds,
            "final_losses": history[-1] if history else None,
            "initial": self.initial,
            "agreement": report.get("held_out"),
            "pairs": report.get("pairs"),
            "model": str(self.run.model_path(NETWORK)),
        }
        if self.writes:
            write_json_atomic(self.run.stage_dir(STAGE) / "summary.json", summary,
                              "the stage's summary")
            with atomic_path(self.run.stage_dir(STAGE) / "teacher_mean.npy",
                             "the teacher's centring vector") as tmp:
                np.save(tmp, teacher.mean)
        if c.progress:
            print(f"stage fr: agreement with the teacher on held-out faces: "
                  f"{summary['agreement']}")
        return summary
