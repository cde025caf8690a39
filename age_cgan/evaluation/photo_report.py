"""``evaluate.py --photos DIR``: the user's path judged, written as photos.json and photos.md.

For each method: the photos aged as ``infer.py`` ages them (``evaluation.photos``), same person
and in the target category per target and mean, the own-category guess, seconds per photo, and
the photo two-sample test (``metrics.photo_realism``) with its power on the controls first.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from age_cgan.evaluation import photos as P


def evaluate_photos(model, folder, out, methods=None, use=None, limit=None, seeds: int = 3,
                    strength=None, seed: int = 0, progress: bool = True,
                    prototype_strengths: dict | None = None) -> dict:
    """Judge ``methods`` (default: the model's own) on the photos of ``folder`` (``use``: the
    manifest's rows of that use; ``limit``: a seeded sample of that many). Returns the results
    and writes ``out``/photos.json and photos.md."""
    from age_cgan.aging import AgingModels
    from age_cgan.judges import AgeEstimator, FaceVerifier
    from age_cgan.pretrained import verified_run

    verifier, estimator = FaceVerifier(), AgeEstimator()  # a missing extra fails first
    models = AgingModels.from_run(verified_run(model) if model is None or
                                  Path(model, "SHA256SUMS").exists() else model)
    P.use_prototype_strengths(models, prototype_strengths)
    rows = P.photo_rows(folder, use)
    if limit and limit < len(rows):
        keep = np.random.default_rng([seed, 37]).permutation(len(rows))[:limit]
        rows = [rows[i] for i in sorted(keep)]
    methods = list(methods or [models.default_method()[0]])
    results = {"photos": str(folder), "use": use, "count": len(rows), "methods": {},
               "prototype_strengths": prototype_strengths or None,
               "seeds": seeds, "power_goal": P.POWER}
    controls_done = False
    for method in methods:
        start = time.perf_counter()
        aged = P.age_photos(models, rows, method, strength, progress)
        entry = P.judge_photos(aged, verifier, estimator, models.bins, progress)
        entry["seconds_per_photo"] = float(np.median(aged.seconds)) if aged.seconds else math.nan
        entry["no_face"] = [path for path, _ in aged.failures]
        if seeds:
            if not controls_done:
                results["controls"] = P.control_realism(models, aged, seeds)
                controls_done = True
            entry["realism"] = P.method_realism(models, aged, seeds)
        entry["total_seconds"] = time.perf_counter() - start
        results["methods"][method] = entry
    if seeds:
        results["powered"] = all(c["accuracy"] >= P.POWER for c in results["controls"].values())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "photos.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    (out / "photos.md").write_text(markdown(results))
    return results


def markdown(results: dict) -> str:
    """The report: one row per method (mean over targets), then per target."""
    lines = [f"# The user's path: {results['count']} photos of {results['photos']}"
             + (f" ({results['use']})" if results.get("use") else ""), ""]
    if results.get("prototype_strengths"):
        lines += [f"Prototype strengths changed: {results['prototype_strengths']}", ""]
    if "controls" in results:
        lines += ["Power of the photo two-sample test (known-bad faces told from real ones; a "
                  f"verdict counts where each is >= {results['power_goal']:.0%}):", ""]
        lines += [f"- {name}: {c['accuracy']:.1%}" for name, c in results["controls"].items()]
        lines.append("")
    lines += ["| method | same person | in the target category | two-sample test | own age right "
              "| s per photo |", "|---|---|---|---|---|---|"]
    for method, entry in results["methods"].items():
        realism = entry.get("realism")
        lines.append(f"| {method} | {entry['mean']['same_person_rate']:.1%} | "
                     f"{entry['mean']['age_accuracy']:.1%} | "
                     f"{'-' if realism is None else format(realism['accuracy'], '.1%')} | "
                     f"{entry['own_category_right']:.1%} | {entry['seconds_per_photo']:.2f} |")
    for method, entry in results["methods"].items():
        per = entry["per_target"]
        lines += ["", f"Per target, {method} (same person / in the target category): " + ", ".join(
            f"{label} {v['same_person_rate']:.0%} / {v['age_accuracy']:.0%}"
            for label, v in per.items())]
    return "\n".join(lines) + "\n"
