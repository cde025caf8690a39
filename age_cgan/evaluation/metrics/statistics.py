"""Statistics of two sets of feature rows: the Frechet distance and the diversity."""

from __future__ import annotations

import math

import numpy as np


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
