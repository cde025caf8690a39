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
head (plus the last ``train_backbone_layers`` layers) learns. Written once on
``training.bridge`` (Update/Step), so it runs on TensorFlow or JAX.

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
from age_cgan.data import normalize
from age_cgan.judges import DLIB_MODEL_NAME, DLIB_THRESHOLD, find_teacher_file, teacher_descriptors
from age_cgan.runs import RunFolder, RunFolderError, holding_run_lock, write_json_atomic
from age_cgan.training.bridge import BACKEND, Step, Update
from age_cgan.training.checkpoint import checkpoint_state, load_checkpoint, save_checkpoint
from age_cgan.training.devices import placement as device_placement

STAGE = "fr"
NETWORK = "face_recognizer"
MIN_INPUT_SIZE = 75  # InceptionResNetV2's smallest input


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
    """The stage's loss ``(forward, batch) -> (loss, metrics)`` for ``bridge.Update``.

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


def agreement_with_teacher(embeddings, teacher_raw, neighbours: int = 5) -> dict:
    """How well FR embeddings (N, D) reproduce the teacher's geometry on the same faces.

    distance_pearson / _spearman: correlation of all pairwise distances; nn_in_teacher_top_k:
    share of faces whose FR nearest neighbour is among the teacher's k nearest;
    same_person_agreement: of pairs dlib calls the same person (< 0.6), the share FR ranks among
    its closest pairs of the same count (pairs beyond duplicates are rare between strangers).
    """
    from scipy.stats import pearsonr, spearmanr

    e, t = np.asarray(embeddings, np.float64), np.asarray(teacher_raw, np.float64)
    n = len(e)
    if n < 3:
        return {"faces": n}

    def distances(x):
        s = np.sum(x * x, 1)
        return np.sqrt(np.maximum(s[:, None] + s[None] - 2 * x @ x.T, 0))

    de, dt = distances(e), distances(t)
    upper = np.triu_indices(n, 1)
    np.fill_diagonal(de, np.inf)
    np.fill_diagonal(dt, np.inf)
    k = min(neighbours, n - 1)
    teacher_knn = np.argsort(dt, axis=1)[:, :k]
    fr_nn = np.argmin(de, axis=1)
    out = {
        "faces": int(n),
        "distance_pearson": float(pearsonr(de[upper], dt[upper])[0]),
        "distance_spearman": float(spearmanr(de[upper], dt[upper])[0]),
        f"nn_in_teacher_top{k}": float(np.mean([fr_nn[i] in teacher_knn[i] for i in range(n)])),
        f"nn_chance_top{k}": float(k / (n - 1)),
    }
    same = dt[upper] < DLIB_THRESHOLD
    if same.any():
        closest = np.argsort(de[upper])[: same.sum()]
        out["teacher_same_pairs"] = int(same.sum())
        out["same_person_agreement"] = float(same[closest].mean())
    return out


def centred_cosine(embeddings, targets) -> float:
    e = np.asarray(embeddings, np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    return float(np.mean(np.sum(e * np.asarray(targets, np.float64), axis=1)))


def _held_out_report(model, dataset, teacher, rows, batch_size, pairs, pairs_limit, seed) -> dict:
    from age_cgan.evaluation import embed, verify_pairs

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


def _targets(dataset, teacher_file, identity_weight):
    """The teacher (from the descriptor file) and integer identities of the dataset's rows."""
    found = teacher_descriptors(dataset.paths, teacher_file, dataset.image_size)
    if found is None:
        found = (np.zeros((len(dataset), 128), np.float32), np.zeros(len(dataset), bool))
    train_rows = ~dataset.is_test
    teacher = Teacher.from_descriptors(*found, train_rows)
    identity = _identity_ints(dataset.identities)
    use_identity = identity_weight > 0 and bool((identity[train_rows] >= 0).any())
    if not teacher.found[train_rows].any() and not use_identity:
        raise ValueError(
            "nothing to train FR on: no dlib_descriptors.npz covers these faces (none beside "
            "them, or their files are not image_size pixels as the descriptors assume; make one "
            "with age_cgan.judges.FaceVerifier, or pass teacher_file=) and the data has no "
            "identities")
    return teacher, identity, use_identity


def _loop(run, step_fn, model, optimizer, sampler, checkpoint, start, steps, log_every,
          checkpoint_every, recalibrate_batches, state, progress) -> list[dict]:
    """Steps start+1..steps through the shared loop; BatchNorm recalibrated at the end."""
    from age_cgan.training.loop import fit

    def save(step):
        save_checkpoint(checkpoint, {NETWORK: model}, {NETWORK: optimizer}, step,
                        {"sampler": sampler.get_state(), **state}, {})

    def recalibrate():
        recalibrate_batch_norm(model, sampler.next, recalibrate_batches)

    return fit(step_fn, sampler.next, name=STAGE, logdir=run.stage_dir(STAGE), start=start,
               total=steps, batch_size=sampler.batch_size, log_every=log_every,
               sample_every=steps, checkpoint_every=checkpoint_every, progress=progress,
               save=save, before_final=recalibrate if recalibrate_batches else None)


@holding_run_lock  # its caller train() may hold it already: the lock nests
def train_face_recognizer(
    run_dir,
    dataset=None,
    steps: int = 2000,
    batch_size: int = 32,
    *,
    learning_rate: float = 1e-3,  # Keras Adam default; what the measured CPU run used
    input_size: int | None = None,
    weights: str | None = None,
    freeze_backbone: bool | None = None,
    train_backbone_layers: int = 0,
    teacher_file=None,
    distill_weight: float = 1.0,
    relation_weight: float = 1.0,
    identity_weight: float = 1.0,
    margin: float = 0.2,
    flip: bool = True,
    eval_faces: int = 500,
    pairs=None,
    pairs_limit: int | None = 200,
    measure_initial: bool = True,
    recalibrate_batches: int = 20,
    log_every: int = 25,
    checkpoint_every: int = 500,
    resume: bool = False,
    overwrite: bool = False,
    seed: int = 0,
    progress: bool = True,
    jit: bool = True,
    model: keras.Model | None = None,
    devices=1,
) -> dict:
    """Train FR in ``run_dir`` and save ``models/face_recognizer.keras``; returns the summary.

    dataset: a ``FaceDataset`` (default: the run's config "data", split as training did); it
      trains on the train split and reports agreement with the teacher on up to ``eval_faces``
      test faces. teacher_file: a ``dlib_descriptors.npz`` (default: beside the faces).
    input_size / weights: the backbone's input side (default config "fr_input_size", else 160;
      75 is the least) and weights (default config "fr_weights"; None / "none" = random,
      "imagenet" needs a download, or a local .h5 file).
    freeze_backbone: default True with pretrained weights, False with a random backbone;
      ``train_backbone_layers`` unfreezes that many last backbone layers when frozen.
    distill_weight / relation_weight: the cosine and relational distillation terms;
      identity_weight / margin: the triplet term, used where the data has identities.
    pairs: a CACD-VS pairs.csv to verify people with the trained FR (``pairs_limit`` pairs).
    recalibrate_batches: training batches whose mean BatchNorm statistics replace the moving
      averages at the end (see ``recalibrate_batch_norm``); 0 keeps the moving averages.
    resume / overwrite: continue from ``stagefr/checkpoint.npz`` / start over it.
    model: a prebuilt image -> unit-embedding model instead of building one (tests).
    devices: "all" or N local devices, data parallel (training.devices). On TensorFlow each
      replica computes the relational and triplet terms over its own rows (they compare faces
      within a batch); on JAX, and for the cosine term, it is the whole batch's loss.
    """
    run = RunFolder(run_dir)
    config = run.read_config() if run.config_path.is_file() else {}
    if dataset is None:
        from age_cgan.runs import load_dataset_for_run

        dataset = load_dataset_for_run(config, None, progress)
    teacher, identity, use_identity = _targets(dataset, teacher_file, identity_weight)
    checkpoint = run.stage_dir(STAGE) / "checkpoint.npz"
    stored_step, damage = checkpoint_state(checkpoint)
    if damage is not None and not overwrite:
        raise damage
    if stored_step is not None and not resume and not overwrite:
        raise RunFolderError(f"stage fr of {run.path} already has a checkpoint at step "
                             f"{stored_step}: pass resume=True (--resume) or overwrite=True")

    # --- networks, step and batches --------------------------------------------------------
    weights = weights if weights is not None else config.get("fr_weights")
    weights = None if weights in (None, "none") else weights
    input_size = int(input_size or config.get("fr_input_size") or networks.FR_INPUT_SIZE)
    freeze = (weights is not None) if freeze_backbone is None else bool(freeze_backbone)
    placement = device_placement(devices, batch_size)
    keras.utils.set_random_seed(seed)
    with placement.scope():  # replicated variables when several devices
        if model is None:
            model = networks.build_face_recognizer(dataset.image_size, weights, input_size,
                                                   arch=config.get("arch", "tutorial"))
        if freeze:
            _freeze(model, train_backbone_layers)
        optimizer = keras.optimizers.Adam(learning_rate, name="adam_face_recognizer")
        loss = make_fr_loss(distill_weight, relation_weight,
                            identity_weight if use_identity else 0, margin)
        step_fn = Step({NETWORK: model}, {NETWORK: optimizer}, [Update(NETWORK, loss)], jit=jit,
                       placement=placement)
    train_rows = ~dataset.is_test & (teacher.found | (identity >= 0))
    sampler = FRBatches(dataset.images, np.flatnonzero(train_rows), teacher.targets,
                        teacher.found, identity, batch_size, seed, flip, pk=use_identity)
    held = np.flatnonzero(dataset.is_test & teacher.found)
    held = np.sort(np.random.default_rng(seed).permutation(held)[:eval_faces])
    settings = {"steps": steps, "batch_size": batch_size, "learning_rate": learning_rate,
                "input_size": input_size, "weights": weights or "none", "freeze_backbone": freeze,
                "train_backbone_layers": train_backbone_layers if freeze else None,
                "distill_weight": distill_weight, "relation_weight": relation_weight,
                "identity_weight": identity_weight if use_identity else 0.0, "margin": margin,
                "flip": flip, "recalibrate_batches": recalibrate_batches, "seed": seed,
                "backend": BACKEND, "train_faces": int(len(sampler.rows)),
                "held_out_faces": int(len(held))}

    # --- resume or measure the starting point ----------------------------------------------
    start, initial = 0, None
    if resume and stored_step is not None:
        with placement.scope():
            start, state, _ = load_checkpoint(checkpoint, {NETWORK: model}, {NETWORK: optimizer})
        sampler.set_state(state["sampler"])
        initial = state.get("initial")
        step_fn.reset()
    elif measure_initial and teacher.found.any():
        initial = _held_out_report(model, dataset, teacher, held, 64, None, None, seed)

    # --- train, recalibrate, save -----------------------------------------------------------
    started = time.perf_counter()
    history = _loop(run, step_fn, model, optimizer, sampler, checkpoint, start, steps, log_every,
                    checkpoint_every, recalibrate_batches, {"initial": initial}, progress)
    run.save_model(model, NETWORK)
    train_seconds = time.perf_counter() - started

    report = _held_out_report(model, dataset, teacher, held, 64, pairs, pairs_limit, seed)
    summary = {
        "teacher": DLIB_MODEL_NAME if teacher.found.any() else None,
        "teacher_file": str(teacher_file or find_teacher_file(dataset.paths))
        if teacher.found.any() else None,
        "teacher_scale": teacher.scale,
        "teacher_equivalent_threshold": DLIB_THRESHOLD / teacher.scale,
        "identities_used": use_identity,
        "identity_weight": settings["identity_weight"],
        "settings": settings,
        "steps_done": steps,
        "train_seconds_this_call": train_seconds,
        "final_losses": history[-1] if history else None,
        "initial": initial,
        "agreement": report.get("held_out"),
        "pairs": report.get("pairs"),
        "model": str(run.model_path(NETWORK)),
    }
    write_json_atomic(run.stage_dir(STAGE) / "summary.json", summary)
    np.save(run.stage_dir(STAGE) / "teacher_mean.npy", teacher.mean)
    return summary
