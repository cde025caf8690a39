"""A recogniser checked on labelled pairs (a CACD-VS style pairs.csv): the run's FR head
and/or dlib on the same pairs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from age_cgan.evaluation.metrics.verification import pair_verification
from age_cgan.evaluation.settings import EvaluationError


def read_pairs(pairs_csv, limit: int | None = None, seed: int = 0) -> dict:
    """A CACD-VS style pairs.csv (pair_id, fold, same_identity, image_0, image_1), the images in
    ``images/`` beside it. ``limit`` keeps a seeded sample with as many same as different
    pairs. Returns {"paths_0", "paths_1", "same", "fold"} as arrays."""
    pairs_csv = Path(pairs_csv)
    with open(pairs_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise EvaluationError(f"{pairs_csv} lists no pairs")
    folder = pairs_csv.parent / "images"
    folder = folder if folder.is_dir() else pairs_csv.parent
    same = np.array([int(r["same_identity"]) == 1 for r in rows])
    order = np.arange(len(rows))
    if limit is not None and limit < len(rows):
        rng = np.random.default_rng(seed)
        take_same = rng.permutation(np.flatnonzero(same))[: (limit + 1) // 2]
        take_diff = rng.permutation(np.flatnonzero(~same))[: limit // 2]
        order = np.sort(np.concatenate([take_same, take_diff]))
    rows = [rows[i] for i in order]
    return {
        "paths_0": np.array([str(folder / r["image_0"]) for r in rows]),
        "paths_1": np.array([str(folder / r["image_1"]) for r in rows]),
        "same": same[order],
        "fold": np.array([int(r.get("fold", i % 10)) for i, r in enumerate(rows)]),
    }


def load_faces(paths, image_size: int) -> np.ndarray:
    """Decode files as the training faces are decoded (centre square, Lanczos) -> uint8."""
    from age_cgan.data import decode_face

    return np.stack([decode_face(str(p), image_size) for p in paths]) if len(paths) else \
        np.zeros((0, image_size, image_size, 3), np.uint8)


def embed(model, faces_uint8, batch_size: int = 64) -> np.ndarray:
    """A Keras face recogniser's embeddings of uint8 faces (inference mode) -> float32 (N, D)."""
    import keras

    from age_cgan.data import normalize

    out = []
    for start in range(0, len(faces_uint8), batch_size):
        batch = normalize(faces_uint8[start:start + batch_size])
        out.append(keras.ops.convert_to_numpy(model(batch, training=False)))
    return np.concatenate(out).astype(np.float32)


def verify_pairs(pairs_csv, image_size: int = 64, face_recognizer=None, verifier=None,
                 limit: int | None = None, seed: int = 0, progress: bool = False,
                 fr_threshold: float | None = None) -> dict:
    """Check recognisers on labelled pairs: the FR head (threshold chosen by fold, and at
    ``fr_threshold`` when given) and/or dlib (at 0.6), on the same pairs.
    Returns {"pairs": n, "fr": {...}, "dlib": {...}}."""
    pairs = read_pairs(pairs_csv, limit, seed)
    a, b = load_faces(pairs["paths_0"], image_size), load_faces(pairs["paths_1"], image_size)
    out = {"pairs_csv": str(pairs_csv), "pairs": int(len(a)),
           "same_pairs": int(pairs["same"].sum())}
    if face_recognizer is not None:
        d = np.linalg.norm(embed(face_recognizer, a) - embed(face_recognizer, b), axis=1)
        out["fr"] = pair_verification(d, pairs["same"], fr_threshold, pairs["fold"])
    if verifier is not None:
        from age_cgan.judges import descriptor_distances

        d = descriptor_distances(verifier.descriptors(a, progress, "dlib pairs (a)"),
                                 verifier.descriptors(b, progress, "dlib pairs (b)"))
        out["dlib"] = pair_verification(d, pairs["same"], verifier.threshold, pairs["fold"])
    return out
