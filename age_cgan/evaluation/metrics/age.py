"""Age accuracy: estimated ages (years) against target categories."""

from __future__ import annotations

import math

import numpy as np

from age_cgan.ages import AgeBins


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
