"""What a user sees: identity and age of real faces aged to every other category.

For N input faces and A categories, one aged face per (face, category): its verifier distance to
the input photo and its estimated age. The face's own category is the reconstruction, reported
apart (``own_age``); every other category is a target. Per target: the same-person rate
(distance < threshold) and mean distance, the share the age estimator puts in the target
category and the MAE to the category's centre. ``mean``: the unweighted mean of the per-target
figures over the targets present, so a category with many source faces does not dominate.
"""

from __future__ import annotations

import math

import numpy as np

from age_cgan.ages import AgeBins
from age_cgan.judges import DLIB_THRESHOLD

#: The four figures of every row of the aging table.
FIGURES = ("same_person_rate", "mean_distance", "age_accuracy", "age_mae")


def aging_metrics(distances, estimated, sources, bins, threshold: float = DLIB_THRESHOLD) -> dict:
    """The aging figures of one method (or reference).

    ``distances`` (N, A): verifier distance of face i aged to category a to input photo i;
    ``estimated`` (N, A): the estimated age in years (the source column is not read, may be
    NaN); ``sources`` (N,): each face's own category. Returns {"per_target": {label: {"n",
    *FIGURES}}, "mean": {"n", "targets", *FIGURES}, "own_age": {"n", "same_person_rate",
    "mean_distance"}}; a target no face is aged to is left out.
    """
    bins = AgeBins.parse(bins)
    d = np.asarray(distances, np.float64)
    ages = np.asarray(estimated, np.float64)
    sources = np.asarray(sources, np.int64).reshape(-1)
    if d.shape != ages.shape or d.shape != (len(sources), bins.num_ages):
        raise ValueError(f"distances {d.shape} and estimated ages {ages.shape} must both be "
                         f"(faces, categories) = ({len(sources)}, {bins.num_ages})")
    targets = np.broadcast_to(np.arange(bins.num_ages), d.shape)
    own = targets == sources[:, None]
    per = {}
    for index, label in enumerate(bins.labels):
        rows = (targets == index) & ~own
        if rows.any():
            per[label] = _figures(d[rows], ages[rows], index, bins, threshold)
    mean = {"n": int(sum(p["n"] for p in per.values())), "targets": len(per)}
    mean.update({key: float(np.mean([p[key] for p in per.values()])) if per else math.nan
                 for key in FIGURES})
    own_d = d[own]
    return {"per_target": per, "mean": mean, "own_age": {
        "n": int(own_d.size),
        "same_person_rate": float(np.mean(own_d < threshold)) if own_d.size else math.nan,
        "mean_distance": float(own_d.mean()) if own_d.size else math.nan}}


def _figures(distances, ages, target: int, bins: AgeBins, threshold: float) -> dict:
    return {"n": int(distances.size),
            "same_person_rate": float(np.mean(distances < threshold)),
            "mean_distance": float(distances.mean()),
            "age_accuracy": float(np.mean(bins.category(ages) == target)),
            "age_mae": float(np.mean(np.abs(ages - bins.centres()[target])))}
