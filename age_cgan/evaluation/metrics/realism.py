"""Realism of aged faces: a classifier two-sample test (Lopez-Paz & Oquab, ICLR 2017).

A fresh small CNN learns to tell aged faces from real faces of the same target categories
(one real face of category t drawn for each face aged to t, so both sides hold the same ages);
its accuracy on held-out folds is the figure. 50% means the aged faces cannot be told from real
faces of that age; the age judge can be fooled by painted patterns, this test sees them.

Folds are grouped by the source face: an aged face's siblings (the same photo at other ages)
and the photo itself, when it is drawn as a real face, are always on one side, or the CNN would
learn identities (36 unchanged photos score 89% without grouping). Mean and spread over seeds.
It measures only; nothing is ever trained against it.
"""

from __future__ import annotations

import numpy as np

from age_cgan.data import resize_faces

#: The classifier's default side (the judges' resolution, and quick on a CPU); the evaluation
#: passes the side of the faces it judges.
SIDE = 64
#: Grouped cross-validation folds.
FOLDS = 5


def paired_samples(aged, sources, real_faces, real_categories, real_sources=None, seed: int = 0):
    """The two samples: aged faces (every target of every face: (N, A, S, S, 3) with (N,)
    sources) and as many real faces, the k-th drawn from ``real_faces`` of the k-th aged face's
    target category (without replacement while a category has faces left). Returns (images,
    labels (1 = aged), groups); a real face's group is its source's when ``real_sources`` (M,)
    names which aged face it is (-1: none), else its own."""
    aged, sources = np.asarray(aged), np.asarray(sources, np.int64)
    n, a = aged.shape[:2]
    real_categories = np.asarray(real_categories, np.int64)
    real_sources = np.full(len(real_faces), -1) if real_sources is None else \
        np.asarray(real_sources, np.int64)
    present = np.isin(np.arange(a), real_categories)  # a target with no real face is left out
    targets = (np.arange(a)[None] != sources[:, None]) & present[None]
    face_of, cat_of = np.nonzero(targets)
    rng = np.random.default_rng([seed, 11])
    picks = np.empty(len(face_of), np.int64)
    for cat in np.unique(cat_of):
        slots = np.flatnonzero(cat_of == cat)
        pool = np.flatnonzero(real_categories == cat)
        order = np.concatenate([rng.permutation(pool) for _ in range(-(-len(slots) // len(pool)))])
        picks[slots] = order[:len(slots)]
    images = np.concatenate([aged[face_of, cat_of], np.asarray(real_faces)[picks]])
    labels = np.concatenate([np.ones(len(face_of)), np.zeros(len(picks))]).astype(np.float32)
    real_groups = np.where(real_sources[picks] >= 0, real_sources[picks], n + picks)
    return images, labels, np.concatenate([face_of, real_groups])


def grouped_folds(groups, folds: int, seed: int) -> np.ndarray:
    """(N,) fold of each sample: whole groups to one fold, seeded, folds of near-equal groups."""
    unique, inverse = np.unique(groups, return_inverse=True)
    order = np.random.default_rng([seed, 13]).permutation(len(unique))
    fold_of_group = np.empty(len(unique), np.int64)
    fold_of_group[order] = np.arange(len(unique)) % folds
    return fold_of_group[inverse]


def classifier(side: int = SIDE):
    """Four stride-2 convolutions and a logit: small enough to learn only what is obvious."""
    import keras

    x = inputs = keras.Input((side, side, 3))
    for filters in (16, 32, 64, 128):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same")(x)
        x = keras.layers.LeakyReLU(0.2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(1)(x), name="two_sample_classifier")


def two_sample_test(images, labels, groups, folds: int = FOLDS, seeds: int = 3,
                    epochs: int = 15, batch_size: int = 64, progress: bool = False,
                    side: int = SIDE) -> dict:
    """Held-out accuracy of fresh classifiers, ``folds``-fold grouped cross-validation repeated
    for ``seeds`` seeds: {"accuracy": mean, "spread": std over seeds, "per_seed": [...],
    "samples": N}. ``images`` uint8 (N, S, S, 3), resized to ``side``."""
    import keras

    x = resize_faces(images, side).astype(np.float32) / 127.5 - 1.0
    y = np.asarray(labels, np.float32)
    per_seed = []
    for seed in range(seeds):
        fold = grouped_folds(groups, folds, seed)
        right = 0
        for k in range(folds):
            train, test = fold != k, fold == k
            keras.utils.set_random_seed(1000 * seed + k)
            model = classifier(x.shape[1])
            model.compile(keras.optimizers.Adam(1e-3),
                          keras.losses.BinaryCrossentropy(from_logits=True))
            flipped = np.concatenate([x[train], x[train][:, :, ::-1]])
            model.fit(flipped, np.concatenate([y[train], y[train]]), batch_size=batch_size,
                      epochs=epochs, shuffle=True, verbose=0)
            held = x[test]
            logits = np.concatenate([keras.ops.convert_to_numpy(
                model(held[i:i + 256], training=False))[:, 0] for i in range(0, len(held), 256)])
            right += int(np.sum((logits > 0) == (y[test] > 0.5)))
        per_seed.append(right / len(y))
        if progress:
            print(f"      two-sample test, seed {seed}: {per_seed[-1]:.1%}", flush=True)
    return {"accuracy": float(np.mean(per_seed)), "spread": float(np.std(per_seed)),
            "per_seed": [float(v) for v in per_seed], "samples": int(len(y)), "folds": folds,
            "epochs": epochs}

