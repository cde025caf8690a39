"""``network``: the photo plus the aging network's change, and the age estimator's guess.

T(photo, own category, target category) -> a change (``networks.build_aging_network``, trained
by ``train.py --stage aging``); the aged face is photo + s * change, brightness only on a
greyscale photo. The network reads the photo at its own input side (``data.resize_faces``, the
training faces' Lanczos), which need not be the other networks'; the change comes back at that
side, and ``result.add_change`` resizes it to the photo. The person's own category comes from
``source_age`` when the user gives it, else from the age estimator A (``train.py --stage
age``): its most probable category, with that probability as the confidence and its years.
"""

from __future__ import annotations

import keras
import numpy as np

from age_cgan.data import is_gray, normalize, resize_faces


def estimate_ages(estimator, faces: np.ndarray, batch_size: int = 256):
    """uint8 faces (N, S, S, 3) -> (category probabilities (N, A), years (N,)) from the age
    estimator, in inference mode."""
    probabilities, years = [], []
    for start in range(0, len(faces), batch_size):
        p, y = estimator(normalize(faces[start:start + batch_size]), training=False)
        probabilities.append(keras.ops.convert_to_numpy(p))
        years.append(keras.ops.convert_to_numpy(y)[:, 0])
    return np.concatenate(probabilities), np.concatenate(years)


def network_changes(network, faces: np.ndarray, sources, categories, strength: float,
                    batch_size: int = 256) -> np.ndarray:
    """s * T(x_i, y_src,i, y) for each uint8 face i (B, S, S, 3) at its source category (B,) and
    each category y of ``categories``: float32 (B, n, T, T, 3) in [-1, 1] units at the network's
    own side T (the faces are resized to it when S differs), colour removed on greyscale
    faces."""
    side = network.input_shape[0][1]
    gray = is_gray(np.asarray(faces))
    faces = resize_faces(faces, side)
    categories = list(categories)
    num = network.input_shape[1][-1]
    one_hot = np.eye(num, dtype=np.float32)
    images = np.repeat(normalize(faces), len(categories), axis=0)
    source = np.repeat(one_hot[np.asarray(sources, np.int64)], len(categories), axis=0)
    target = np.tile(one_hot[categories], (len(faces), 1))
    out = [keras.ops.convert_to_numpy(network(
        [images[i:i + batch_size], source[i:i + batch_size], target[i:i + batch_size]],
        training=False)) for i in range(0, len(images), batch_size)]
    change = strength * np.concatenate(out).reshape(len(faces), len(categories), side, side, 3)
    change[gray] = change[gray].mean(axis=-1, keepdims=True)  # brightness only
    return change
