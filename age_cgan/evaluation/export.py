"""The generation phase (networks, no judge): the test faces, faces from random z per
category, and the test faces' reconstructions from each latent method (``latents``), with the
aging section's faces (``aging``), as a ``FaceBundle``.

Keras and the networks are imported inside the functions, so that the judging side (which
imports ``fr_provenance``) needs no deep-learning stack."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np

from age_cgan.ages import AgeBins
from age_cgan.data import resize_faces
from age_cgan.evaluation.aging import age_test_faces
from age_cgan.evaluation.bundle import FACES_FORMAT, FaceBundle
from age_cgan.evaluation.latents import find_latents
from age_cgan.errors import SettingError, command, setting
from age_cgan.evaluation.settings import METHODS, EvalSettings, EvaluationError, _log
from age_cgan.judges import DLIB_MODEL_NAME
from age_cgan.runs import RunFolder, load_dataset_for_run


def load_test_faces(config: dict, dataset=None, limit=None, seed=0, progress=True, side=None):
    """The run's test split (a seeded sample of ``limit``) and its train split, from
    ``dataset`` or by loading config["data"] as training did (at ``side`` px when given)."""
    dataset = dataset if dataset is not None else load_dataset_for_run(config, None, progress,
                                                                       side, "side")
    test = dataset.test()
    if len(test) == 0:
        raise EvaluationError(f"the run's data has no test split ({setting('test_fraction')} 0?)")
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


def export_faces(run_dir, settings: EvalSettings | None = None, dataset=None,
                 models=None) -> FaceBundle:
    """The generation phase (networks, no judge): faces from random z per category, and the
    run's test faces reconstructed from each latent method. ``dataset`` / ``models`` replace
    what would be loaded (the run's data, ``AgingModels.from_run``).

    The test faces keep their side (``settings.side``, else the run's image_size; a given
    ``dataset``'s own): each network reads them resized to its side, and the reconstructions
    and aged faces are at the test faces' side; the generated faces are G's."""
    from age_cgan.aging import AgingModels
    from age_cgan.backend import BACKEND

    settings, started, timings = settings or EvalSettings(), time.perf_counter(), {}
    if settings.pairs:
        raise EvaluationError("the pairs check needs the networks and the judges together: run "
                              "it in the one-step evaluation "
                              f"({command('evaluate', run='RUN', pairs='PAIRS.csv')})")
    aging_names = _aging_names(settings)  # an unknown name fails before any work
    run = RunFolder(run_dir)
    config = run.read_config()
    models = models or AgingModels.from_run(run.path)
    if settings.aging_methods is None:  # 'all': those the model has the networks for
        aging_names = tuple(m for m in aging_names if models.unavailable_reason(m) is None)
    test, train = load_test_faces(config, dataset, settings.limit, settings.seed,
                                  settings.progress, settings.side)
    size = test.images.shape[1]

    t = time.perf_counter()
    _log(settings.progress, f"[export] {settings.per_age} generated faces per category")
    generated, categories = generate_faces(models.generator, models.bins, settings.per_age,
                                           models.z_dim, settings.seed, settings.batch_size)
    timings["generate"] = time.perf_counter() - t
    reconstructions, methods, latents = [], {}, {}
    for method in settings.methods:
        t = time.perf_counter()
        _log(settings.progress, f"[export] {method} of {len(test)} test faces")
        z, losses = find_latents(models, method, test.images, test.categories, settings)
        latents[METHODS[method]] = (z, losses)  # the aging section reuses it
        reconstructions.append(resize_faces(reconstruct(
            models.generator, z, test.categories, models.bins, settings.batch_size), size))
        info = {"mode": METHODS[method], "seconds": time.perf_counter() - t}
        if losses is not None:
            best = losses.min(axis=0)
            info.update(steps=int(len(losses) - 1), loss_start=float(losses[0].mean()),
                        loss_best=float(best.mean()),
                        improved=float(np.mean(best < losses[0])))
        methods[method] = info
        timings[method] = info["seconds"]
    aged, aging = _age(models, test, settings, aging_names, latents, reconstructions, timings)
    timings["total"] = time.perf_counter() - started
    _log(settings.progress, "[export] done: " + ", ".join(f"{k} {v:.1f} s"
                                                         for k, v in timings.items()))
    meta = {
        "format": FACES_FORMAT, "run": str(run.path), "data": _source(test, config),
        "bins": models.bins.spec, "image_size": size, "z_dim": models.z_dim,
        "settings": settings.to_dict(), "backend": BACKEND, "methods": methods,
        "face_recognizer": fr_provenance(run), "timings_s": timings, "aging": aging,
        "config": config, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return FaceBundle(
        meta=meta, generated=generated, generated_categories=categories.astype(np.int64),
        test_images=test.images, test_categories=test.categories.astype(np.int64),
        test_ages=test.ages.astype(np.float32), test_paths=np.asarray(test.paths, dtype=str),
        reconstructions=np.stack(reconstructions) if reconstructions else
        np.zeros((0, len(test), size, size, 3), np.uint8),
        train_paths=np.asarray(train.paths, dtype=str), aged=aged)


def _source(test, config: dict) -> str | None:
    """The faces evaluated: the folder the test faces were read from (a ``--data`` or
    ``--side`` load), not the run's configured data unless that is what was read."""
    summary = getattr(test, "summary", None)
    return getattr(summary, "source", None) or config.get("data")


def _aging_names(settings: EvalSettings) -> tuple[str, ...]:
    """The per-photo methods of the aging section (``age_cgan.aging.METHODS`` when the
    settings name none); ValueError for a name that list does not have."""
    from age_cgan.aging import METHODS as AGING_METHODS

    names = AGING_METHODS if settings.aging_methods is None else settings.aging_methods
    unknown = [m for m in names if m not in AGING_METHODS]
    if unknown:
        raise SettingError(f"unknown per-photo methods {unknown} in {setting('methods')}; "
                           f"choose from {list(AGING_METHODS)} (or the paper's {list(METHODS)})")
    return tuple(names)


def _age(models, test, settings, names, latents, reconstructions, timings):
    """The aging section's faces (None when ``names`` is empty) and its meta. The identity
    table's reconstructions become the aged faces' own-age column (the same G(z, y)), so that
    both figures are on the same pixels and the judge describes them once."""
    if not names:
        return None, None
    t = time.perf_counter()
    settings = dataclasses.replace(settings, aging_methods=tuple(names))
    aged, made = age_test_faces(models, test.images, test.categories, settings, latents)
    rows = np.arange(len(test))
    for k, method in enumerate(settings.methods):
        if METHODS[method] in names:
            reconstructions[k] = aged[list(names).index(METHODS[method]), rows,
                                      test.categories]
    timings["aging"] = time.perf_counter() - t
    return aged, {"methods": list(names), "made": made}
