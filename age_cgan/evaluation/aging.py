"""The aging section: held-out real faces aged to every other category, judged as a user would.

Export side (networks, no judge; Keras imported inside the functions): ``age_test_faces`` runs
each per-photo method of ``age_cgan.aging.METHODS`` (any name it lists, never a fixed four) on
the test faces at their true categories and keeps its output at every category, uint8
(M, N, A, S, S, 3). A method whose latent was already found for the identity table (z0,
z*_pixel, z*_IP; ``latents.find_latents``) reuses it (``difference`` reuses z*_pixel, its
pivot), so nothing is optimised twice.

Judging side (judges, no network): ``judge_aging`` measures each method with
``metrics.aging.aging_metrics``, next to two references on the same faces that bound the scale:

* ``input``: the photo itself given as the answer for every target: identity 1.0 by
  construction, and the age accuracy of doing nothing;
* ``stranger``: a face from a random z at the target age: the generated faces of the age
  section (z ~ N(0, I), ``per_age`` per category), face i paired with generated face
  i mod per_age of each category: the age accuracy of unconditioned generation, identity
  near 0 (a different person).
"""

from __future__ import annotations

import time

import numpy as np

from age_cgan.evaluation.latents import find_latents
from age_cgan.evaluation.metrics.aging import aging_metrics
from age_cgan.evaluation.settings import METHODS, _log


# --------------------------------------------------------------------------- export side


def method_latents(models, method: str, faces, sources, settings, cache: dict):
    """The latent of a per-photo ``method`` for uint8 faces (N, S, S, 3) at their categories
    (N,): (z (N, z_dim), the optimisation's losses (steps + 1, N) or None), found once per
    latent mode in ``cache`` (z0, z*_pixel, z*_IP as the identity table finds them); (None,
    None) for the aging network, which has no latent."""
    from age_cgan.aging import LATENT_MODE

    mode = LATENT_MODE.get(method, method)
    if mode is None:
        return None, None
    if mode not in cache:
        paper = {m: name for name, m in METHODS.items()}.get(mode)
        if paper is not None:
            cache[mode] = find_latents(models, paper, faces, sources, settings)
        else:  # a method evaluation has no paper name for: its own latents
            z, _, losses = models.latents(faces, sources, method, progress=settings.progress,
                                          batch_size=settings.batch_size)
            cache[mode] = (z, losses if len(losses) else None)
    return cache[mode]


def estimated_sources(models, faces, sources) -> tuple[np.ndarray, dict]:
    """The age estimator's guess of each test face's own category, as a user's photo gets it
    (no label), and how often it is right (or within one category) against ``sources``."""
    guess, confidence, _ = models.estimate_sources(faces)
    return guess, {"accuracy": float(np.mean(guess == sources)),
                   "within_one": float(np.mean(np.abs(guess - sources) <= 1)),
                   "mean_confidence": float(np.mean(confidence))}


def age_test_faces(models, faces, sources, settings, cache: dict | None = None):
    """Each method of ``settings.aging_methods`` on the test faces: (uint8 (M, N, A, S, S, 3),
    one column per category, the face's own category being its reconstruction; per-method
    info: seconds, latent mode, whether the latent was reused, the optimisation's losses).
    The faces come back at the test faces' side S, whatever side each network reads.

    The methods that need the age estimator (the aging network, the prototypes) age each face
    from its guess of the face's category (what a user's photo gets), the Age-cGAN methods from
    its true category (as the paper does)."""
    from age_cgan.aging import LATENT_MODE, METHOD_NEEDS, METHOD_TITLES, PHOTO_METHODS

    cache = {} if cache is None else cache
    sources = np.asarray(sources, np.int64)
    out, info = [], {}
    for method in settings.aging_methods:
        t = time.perf_counter()
        reused = LATENT_MODE.get(method, method) in cache
        _log(settings.progress, f"[export] aging: {method} on {len(faces)} test faces"
                                + (" (its latent reused)" if reused else ""))
        z, losses = method_latents(models, method, faces, sources, settings, cache)
        own, estimated = sources, None
        if "age_estimator" in METHOD_NEEDS[method] and models.age_estimator is not None:
            own, estimated = estimated_sources(models, faces, sources)
        strength = settings.strength if settings.strength is not None \
            else models.default_strength(method)
        step = settings.batch_size
        out.append(np.concatenate([
            models.images_from_latents(faces[i:i + step], None if z is None else z[i:i + step],
                                       own[i:i + step], method, strength=strength)
            for i in range(0, len(faces), step)]))
        info[method] = {"title": METHOD_TITLES.get(method, method),
                        "latent": LATENT_MODE.get(method, method), "latent_reused": reused,
                        "strength": strength if method in PHOTO_METHODS else None,
                        "source": "estimated" if estimated else "true category",
                        "seconds": time.perf_counter() - t}
        if estimated:
            info[method]["source_estimated"] = estimated
        if losses is not None and not reused:
            info[method].update(steps=int(len(losses) - 1),
                                loss_start=float(losses[0].mean()),
                                loss_best=float(losses.min(axis=0).mean()))
    return np.stack(out), info


# --------------------------------------------------------------------------- judging side


def stranger_rows(generated_categories, n_faces: int, num_ages: int) -> np.ndarray:
    """(N, A) rows of the generated faces that play the stranger: for face i and category a,
    generated face i mod (faces of a) among those of category a; -1 where a has none."""
    generated_categories = np.asarray(generated_categories)
    out = np.full((n_faces, num_ages), -1, np.int64)
    for a in range(num_ages):
        pool = np.flatnonzero(generated_categories == a)
        if len(pool):
            out[:, a] = pool[np.arange(n_faces) % len(pool)]
    return out


def judge_aging(faces, real_desc, verifier, estimator, progress: bool = True,
                realism_seeds: int = 0) -> tuple[dict, dict]:
    """The aging section of a ``FaceBundle`` with aged faces: (results, examples for the
    figure). ``real_desc``: dlib descriptors of the test faces (N, 128). Each method's faces
    go to dlib in one batch (every category, the own one for the reconstruction figure) and
    to the age estimator in one batch (the targets only)."""
    from age_cgan.judges import descriptor_distances

    bins, sources = faces.bins, faces.test_categories
    n, a = len(faces.test_images), bins.num_ages
    target = np.arange(a)[None] != sources[:, None]  # (N, A): the aged, not the reconstruction
    info = faces.meta.get("aging") or {}
    methods = {}
    for m, method in enumerate(info.get("methods", [])):
        t = time.perf_counter()
        aged = faces.aged[m]  # (N, A, S, S, 3)
        flat = aged.reshape(-1, *aged.shape[2:])
        desc = verifier.descriptors(flat, progress, f"dlib descriptors (aged, {method})")
        d = descriptor_distances(np.repeat(real_desc, a, axis=0), desc).reshape(n, a)
        ages = np.full((n, a), np.nan)
        ages[target] = estimator.estimate(aged[target], progress, f"ages (aged, {method})")
        made = (info.get("made") or {}).get(method, {})
        methods[method] = {**aging_metrics(d, ages, sources, bins, verifier.threshold),
                           "title": made.get("title", method),
                           "seconds": made.get("seconds", 0.0) + time.perf_counter() - t}
        if made.get("source_estimated"):  # aged from the age estimator's guess, not the label
            methods[method]["source_estimated"] = made["source_estimated"]
        if realism_seeds:
            methods[method]["realism"] = realism(aged, faces, realism_seeds, progress)
        _log(progress, f"      {method}: {time.perf_counter() - t:.0f} s")
    references = {"input": _input_reference(faces, estimator, verifier.threshold, progress),
                  "stranger": _stranger_reference(faces, real_desc, verifier, estimator,
                                                  progress)}
    if realism_seeds:  # the photo itself at every target: what indistinguishable scores
        unchanged = np.repeat(faces.test_images[:, None], a, axis=1)
        references["input"]["realism"] = realism(unchanged, faces, realism_seeds, progress)
    results = {"methods": methods, "references": references, "test_faces": int(n),
               "targets_per_face": int(a - 1),
               "stranger": "a generated face (z ~ N(0, I)) at the target age, face i paired "
                           "with generated face i mod per_age of that category"}
    examples = {"inputs": faces.test_images[:3], "aged": faces.aged[:, :3],
                "titles": [methods[m]["title"] for m in methods]}
    return results, examples


def realism(aged, faces, seeds: int, progress: bool) -> dict:
    """The two-sample test of aged faces (N, A, S, S, 3) against the real test faces of the
    target categories (each test face grouped with its own aged faces), at their side S; a
    target category no test face has is left out, and too few faces for the folds give a note
    instead."""
    from age_cgan.evaluation.metrics.realism import FOLDS, paired_samples, two_sample_test

    n = len(faces.test_images)
    images, labels, groups = paired_samples(aged, faces.test_categories, faces.test_images,
                                            faces.test_categories, np.arange(n))
    if len(np.unique(groups)) < 2 * FOLDS:
        return {"note": f"too few test faces ({n}) for {FOLDS} folds"}
    return two_sample_test(images, labels, groups, seeds=seeds, progress=progress,
                           side=images.shape[1])


def _input_reference(faces, estimator, threshold, progress) -> dict:
    """The photo itself as every target's answer: distance 0, its own estimated age."""
    n, a = len(faces.test_images), faces.bins.num_ages
    own = estimator.estimate(faces.test_images, progress, "ages (real)")
    guess = faces.bins.category(own)
    return {**aging_metrics(np.zeros((n, a)), np.repeat(own[:, None], a, axis=1),
                            faces.test_categories, faces.bins, threshold), "title": "input photo",
            "judge_on_real_faces": {  # the independent judge's own-category figures
                "accuracy": float(np.mean(guess == faces.test_categories)),
                "within_one": float(np.mean(np.abs(guess - faces.test_categories) <= 1))}}


def _stranger_reference(faces, real_desc, verifier, estimator, progress) -> dict:
    """A generated face of a random z at each category, against the input photo."""
    from age_cgan.judges import descriptor_distances

    n, a = len(faces.test_images), faces.bins.num_ages
    rows = stranger_rows(faces.generated_categories, n, a)
    if (rows < 0).any():
        return {"title": "stranger", "note": "no generated faces of some category"}
    desc = verifier.descriptors(faces.generated, progress, "dlib descriptors (generated)")
    ages = estimator.estimate(faces.generated, progress, "ages (generated)")
    d = descriptor_distances(np.repeat(real_desc, a, axis=0), desc[rows.reshape(-1)])
    return {**aging_metrics(d.reshape(n, a), ages[rows], faces.test_categories, faces.bins,
                            verifier.threshold), "title": "stranger (random z)"}
