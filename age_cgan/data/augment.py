"""Photo-like augmentation of uint8 faces for the age estimator (numpy and Pillow only).

A user's photo differs from a UTKFace chip in ways that say nothing about age: a mirror image,
a crop a few pixels off, blur, JPEG blocks, sensor noise, a black-and-white print, other light.
``augment`` draws each of these per face with a seeded Generator, so an estimator trained on
them reads age from the face, not from the camera.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

#: Probability of each change per face (flip is always half the faces).
RATES = {"shift": 0.5, "blur": 0.2, "jpeg": 0.25, "noise": 0.2, "gray": 0.1, "light": 0.5}
MAX_SHIFT = 4  # pixels: the detector's crops are off by about this much at 64 px


def _shift(face, rng):
    dy, dx = rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, 2)
    padded = np.pad(face, ((MAX_SHIFT, MAX_SHIFT), (MAX_SHIFT, MAX_SHIFT), (0, 0)), mode="edge")
    h, w = face.shape[:2]
    return padded[MAX_SHIFT + dy:MAX_SHIFT + dy + h, MAX_SHIFT + dx:MAX_SHIFT + dx + w]


def _blur(face, rng):
    radius = float(rng.uniform(0.5, 1.5))
    return np.asarray(Image.fromarray(face).filter(ImageFilter.GaussianBlur(radius)))


def _jpeg(face, rng):
    buffer = io.BytesIO()
    Image.fromarray(face).save(buffer, "JPEG", quality=int(rng.integers(20, 80)))
    return np.asarray(Image.open(buffer).convert("RGB"))


def _noise(face, rng):
    sigma = rng.uniform(2.0, 8.0)
    return np.clip(face + rng.normal(0, sigma, face.shape), 0, 255)


def _gray(face, rng):
    luma = face.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat(luma[..., None], 3, axis=-1)


def _light(face, rng):
    contrast, brightness = rng.uniform(0.8, 1.2), rng.uniform(-20, 20)
    mean = face.mean()
    return np.clip((face - mean) * contrast + mean + brightness, 0, 255)


CHANGES = {"shift": _shift, "blur": _blur, "jpeg": _jpeg, "noise": _noise, "gray": _gray,
           "light": _light}


def augment(faces: np.ndarray, rng: np.random.Generator, rates: dict | None = None) -> np.ndarray:
    """uint8 faces (B, S, S, 3) -> uint8 faces of the same shape, each mirrored with
    probability 1/2 and changed by each of ``CHANGES`` with its probability in ``rates``
    (default ``RATES``). The input is not modified."""
    rates = RATES if rates is None else rates
    out = np.array(faces, copy=True)
    for i in range(len(out)):
        face = out[i, :, ::-1] if rng.random() < 0.5 else out[i]
        for name, change in CHANGES.items():
            if rng.random() < rates.get(name, 0.0):
                face = np.rint(change(np.ascontiguousarray(face), rng)).astype(np.uint8)
        out[i] = face
    return out
