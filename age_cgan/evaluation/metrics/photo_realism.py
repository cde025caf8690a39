"""Realism at the photo's size: a two-sample test whose power is shown on known-bad controls.

A fresh small CNN trained from scratch on a few hundred faces cannot tell a 25-year-old from a
real 60-year-old (53-55% on the user's path). This test gives its classifier what a viewer
looks at, as features of a face crop at ``side`` px (``JUDGE_SIDE``):

* age: the age estimator's pooled features (a network trained on the training split's own ages,
  never on a judge), so a face that keeps a young look at 60+ is seen;
* detail: the log energy of four luma bands (Gaussian differences, sigma 0.7-6 px at 160 px)
  in each cell of a 4x4 grid, so smeared, blurred or over-sharpened regions are seen where
  they are (a mouth, a jaw);
* light and colour: the mean and spread of luma and of the two chroma axes in each cell of a
  4x4 grid, so casts, ghosts and patches are seen.

An L2-regularised logistic regression on the standardised features, cross-validated in folds
grouped by source photo (its aged versions, and the photo itself where drawn as real, never
straddle train and test). 50% = the two samples cannot be told apart. It measures only; nothing
is ever trained against it. ``controls`` reports its power on known-bad faces first.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, optimize

from age_cgan.evaluation.metrics.realism import FOLDS, grouped_folds

#: Band sigmas in px at ``side`` 160 (scaled with the side).
BAND_SIGMAS = (0.7, 1.5, 3.0, 6.0)
#: Cells of the feature grid on each side.
GRID = 4
#: The chroma histogram: bins per axis over [-range, range] (chroma in [0, 1] units).
CHROMA_BINS = 8
CHROMA_RANGE = 0.16
#: The logistic regression's L2 weight (on standardised features).
L2 = 1.0


def _cells(field: np.ndarray, grid: int = GRID) -> np.ndarray:
    """(N, S, S) -> (N, grid * grid) cell means."""
    n, s = field.shape[:2]
    c = s // grid
    return field[:, :c * grid, :c * grid].reshape(n, grid, c, grid, c).mean(axis=(2, 4)).reshape(
        n, -1)


def image_features(faces: np.ndarray) -> np.ndarray:
    """uint8 (N, S, S, 3) -> float (N, F): band energies and light and colour per cell."""
    x = np.asarray(faces, np.float32) / 255.0
    side = x.shape[1]
    luma = x @ np.array([0.299, 0.587, 0.114], np.float32)
    cr, cb = x[..., 0] - luma, x[..., 2] - luma
    feats = []
    previous = luma
    for sigma in BAND_SIGMAS:
        blurred = ndimage.gaussian_filter(luma, (0, sigma * side / 160, sigma * side / 160))
        feats.append(np.log(_cells((previous - blurred) ** 2) + 1e-6))
        previous = blurred
    for channel in (luma, cr, cb):
        mean = _cells(channel)
        feats += [mean, np.sqrt(np.maximum(_cells(channel ** 2) - mean ** 2, 0.0))]
    feats.append(_chroma_histogram(cr, cb))
    return np.concatenate(feats, axis=1)


def _chroma_histogram(cr: np.ndarray, cb: np.ndarray, bins: int = CHROMA_BINS) -> np.ndarray:
    """(N, S, S) chroma axes -> (N, bins * bins): the share of the crop's central half in
    each cell of a chroma histogram (a cast in any hue moves skin out of its usual cells,
    which a linear classifier on the means alone cannot see)."""
    s = cr.shape[1]
    centre = (slice(None), slice(s // 4, 3 * s // 4), slice(s // 4, 3 * s // 4))
    edges = np.linspace(-CHROMA_RANGE, CHROMA_RANGE, bins + 1)[1:-1]
    i = np.digitize(cr[centre], edges) * bins + np.digitize(cb[centre], edges)
    counts = np.stack([np.bincount(row.ravel(), minlength=bins * bins) for row in i])
    return np.log(counts / counts.sum(axis=1, keepdims=True) + 1e-3)


def _fit(x: np.ndarray, y: np.ndarray, l2: float = L2) -> np.ndarray:
    """Weights (F + 1,) of an L2 logistic regression (L-BFGS)."""
    xb = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    sign = 2.0 * y - 1.0

    def loss(w):
        margin = sign * (xb @ w)
        value = np.logaddexp(0.0, -margin).mean() + 0.5 * l2 * (w[:-1] @ w[:-1]) / len(x)
        grad = xb.T @ (-sign * (1.0 / (1.0 + np.exp(margin)))) / len(x)
        grad[:-1] += l2 * w[:-1] / len(x)
        return value, grad

    return optimize.minimize(loss, np.zeros(xb.shape[1]), jac=True, method="L-BFGS-B",
                             options={"maxiter": 500}).x


def two_sample_accuracy(features, labels, groups, folds: int = FOLDS, seeds: int = 3,
                        strata=None) -> dict:
    """Held-out accuracy of the logistic regression, grouped ``folds``-fold, over ``seeds``:
    {"accuracy", "spread", "per_seed", "samples"}. ``labels`` 1 = the sample under test.
    ``strata`` (N,): one classifier per stratum (the target category: conditional on it, so
    that a 25-year-old's unchanged photo is compared with real 60-year-olds, not with the
    pool of every target's real faces, whose ages it shares)."""
    f = np.asarray(features, np.float64)
    y = np.asarray(labels, np.float64)
    strata = np.zeros(len(y), np.int64) if strata is None else np.asarray(strata)
    per_seed = []
    for seed in range(seeds):
        fold = grouped_folds(groups, folds, seed)
        right = 0
        for k in range(folds):
            for stratum in np.unique(strata):
                here = strata == stratum
                train, test = (fold != k) & here, (fold == k) & here
                if not test.any() or len(np.unique(y[train])) < 2:
                    continue
                mu, sd = f[train].mean(0), f[train].std(0) + 1e-6
                w = _fit((f[train] - mu) / sd, y[train])
                logits = ((f[test] - mu) / sd) @ w[:-1] + w[-1]
                right += int(np.sum((logits > 0) == (y[test] > 0.5)))
        per_seed.append(right / len(y))
    return {"accuracy": float(np.mean(per_seed)), "spread": float(np.std(per_seed)),
            "per_seed": [float(v) for v in per_seed], "samples": int(len(y)), "folds": folds}


# --------------------------------------------------------------------------- controls


def blurred(faces: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Each face blurred by a Gaussian of ``sigma`` px (at the faces' own side)."""
    out = ndimage.gaussian_filter(np.asarray(faces, np.float32), (0, sigma, sigma, 0))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def colour_cast(faces: np.ndarray, strength: float = 0.05, seed: int = 0) -> np.ndarray:
    """Each face's chroma shifted by ``strength`` (of the [0, 1] range) towards one of six hues
    (yellow, orange, pink, purple, green, ashy blue-grey), drawn per face: the casts a viewer
    named."""
    hues = np.array([[1, 1, -1], [1, 0.3, -1], [1, -0.5, 0.3], [0.5, -1, 1], [-0.6, 1, -0.6],
                     [-0.5, -0.2, 0.8]], np.float32)
    hues -= hues @ np.array([0.299, 0.587, 0.114], np.float32)[:, None] * np.ones(3)
    hues /= np.abs(hues).max(axis=1, keepdims=True)
    pick = np.random.default_rng([seed, 17]).integers(0, len(hues), len(faces))
    out = np.asarray(faces, np.float32) + 255.0 * strength * hues[pick][:, None, None, :]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def jaw_warp(faces: np.ndarray, amplitude: float = 0.02, seed: int = 0) -> np.ndarray:
    """A mild smooth warp of the mouth and jaw (lower middle of a ``find_faces`` crop): a
    displacement of up to ``amplitude`` of the side, a random smooth field under a soft window."""
    faces = np.asarray(faces, np.float32)
    n, side = faces.shape[:2]
    t = (np.arange(side) + 0.5) / side
    xx, yy = np.meshgrid(t, t)
    window = np.exp(-0.5 * (((xx - 0.5) / 0.18) ** 2 + ((yy - 0.74) / 0.12) ** 2))
    rng = np.random.default_rng([seed, 19])
    out = np.empty_like(faces)
    for i in range(n):
        coarse = rng.normal(size=(2, 4, 4))
        field = np.stack([ndimage.zoom(c, side / 4, order=3)[:side, :side] for c in coarse])
        field *= amplitude * side * window / (np.abs(field).max() + 1e-6)
        coords = [np.mgrid[0:side, 0:side][0] + field[1], np.mgrid[0:side, 0:side][1] + field[0]]
        for k in range(3):
            out[i, ..., k] = ndimage.map_coordinates(faces[i, ..., k], coords, order=1,
                                                     mode="nearest")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


CONTROLS = {"blur sigma 1.5 px": blurred, "colour cast": colour_cast,
            "mouth and jaw warp": jaw_warp}


def control_samples(faces: np.ndarray, categories: np.ndarray, make, seed: int = 0):
    """Real faces split in two halves balanced by category: one half changed by ``make`` (label
    1), the other unchanged (label 0); each face its own group. Returns (faces, labels, groups)
    for ``two_sample_accuracy`` (after ``image_features``)."""
    rng = np.random.default_rng([seed, 23])
    changed = np.zeros(len(faces), bool)
    for c in np.unique(categories):
        rows = rng.permutation(np.flatnonzero(categories == c))
        changed[rows[: len(rows) // 2]] = True
    out = np.array(faces)
    out[changed] = make(out[changed])
    return out, changed.astype(np.float32), np.arange(len(faces))
