"""Verification of labelled face pairs by distance: ROC AUC, accuracy at a threshold and
with a threshold chosen by fold."""

from __future__ import annotations

import math

import numpy as np


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
