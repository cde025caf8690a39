"""Same-person rates of (face, other face) pairs from their verifier distances."""

from __future__ import annotations

import math

import numpy as np

from age_cgan.judges import DLIB_THRESHOLD


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
