"""How well face-recogniser embeddings reproduce a teacher's (dlib's) geometry on the same
faces: the agreement stage fr reports on held-out faces."""

from __future__ import annotations

import numpy as np

from age_cgan.judges import DLIB_THRESHOLD


def agreement_with_teacher(embeddings, teacher_raw, neighbours: int = 5) -> dict:
    """How well FR embeddings (N, D) reproduce the teacher's geometry on the same faces.

    distance_pearson / _spearman: correlation of all pairwise distances; nn_in_teacher_top_k:
    share of faces whose FR nearest neighbour is among the teacher's k nearest;
    same_person_agreement: of pairs dlib calls the same person (< 0.6), the share FR ranks among
    its closest pairs of the same count (pairs beyond duplicates are rare between strangers).
    """
    from scipy.stats import pearsonr, spearmanr

    e, t = np.asarray(embeddings, np.float64), np.asarray(teacher_raw, np.float64)
    n = len(e)
    if n < 3:
        return {"faces": n}

    def distances(x):
        s = np.sum(x * x, 1)
        return np.sqrt(np.maximum(s[:, None] + s[None] - 2 * x @ x.T, 0))

    de, dt = distances(e), distances(t)
    upper = np.triu_indices(n, 1)
    np.fill_diagonal(de, np.inf)
    np.fill_diagonal(dt, np.inf)
    k = min(neighbours, n - 1)
    teacher_knn = np.argsort(dt, axis=1)[:, :k]
    fr_nn = np.argmin(de, axis=1)
    out = {
        "faces": int(n),
        "distance_pearson": float(pearsonr(de[upper], dt[upper])[0]),
        "distance_spearman": float(spearmanr(de[upper], dt[upper])[0]),
        f"nn_in_teacher_top{k}": float(np.mean([fr_nn[i] in teacher_knn[i] for i in range(n)])),
        f"nn_chance_top{k}": float(k / (n - 1)),
    }
    same = dt[upper] < DLIB_THRESHOLD
    if same.any():
        closest = np.argsort(de[upper])[: same.sum()]
        out["teacher_same_pairs"] = int(same.sum())
        out["same_person_agreement"] = float(same[closest].mean())
    return out


def centred_cosine(embeddings, targets) -> float:
    e = np.asarray(embeddings, np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    return float(np.mean(np.sum(e * np.asarray(targets, np.float64), axis=1)))
