"""One face's outputs (``AgedFace``), and a change added to the photo at its own resolution.

A method that returns the photo plus a change (``difference``, ``network``) computes the change
at its network's side (G's 64 px, the aging network's own); ``add_change`` resizes it to the
face crop's own size (up to ``faces.DETAIL_SIDE``) and adds it there, so the aged face keeps the
photo's sharpness. On a greyscale photo only the change's brightness is added.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from age_cgan.data import is_gray, normalize


@dataclasses.dataclass
class AgedFace:
    """The outputs for one face: uint8 images (S, S, 3) at the network's size, and the
    optimisation's record. ``detail`` / ``aged_detail``: the input crop and the aged faces at
    the crop's own size (methods that add a change to the photo; None for the others)."""

    face: np.ndarray  # the input crop
    reconstruction: np.ndarray  # the output at the source category
    aged: np.ndarray  # (n, S, S, 3): the output for each requested category
    categories: list[int]  # the categories of ``aged``
    labels: list[str]  # their labels ("0-18", ..., "60+")
    source_category: int
    source_label: str
    source_given: bool  # True: from source_age; False: estimated
    z0: np.ndarray | None  # E(face) (None for the aging network, which has no latent)
    z: np.ndarray | None
    optimize: str
    steps: int
    loss_history: list[float]  # the loss at z0, then after each step ([] for no optimisation)
    seconds: float
    source_confidence: float | None = None  # the age estimator's probability of its guess
    source_years: float | None = None  # the age estimator's years, where in source_category
    source_by: str = "given"  # "given", "age estimator" or "nearest reconstruction"
    strength: float | None = None  # how much of the change was added (change methods only)
    detail: np.ndarray | None = None  # (D, D, 3) the input crop at its own size
    aged_detail: np.ndarray | None = None  # (n, D, D, 3)
    reconstruction_detail: np.ndarray | None = None
    #: the prototype method's landmarks: "own" (dlib's, on this face), "mean shape" (the
    #: category's average, where dlib's landmark model is missing); None for other methods
    landmarks: str | None = None

    @property
    def z_distance(self) -> float | None:
        """How far the optimisation moved z from E(face) (Euclidean)."""
        if self.z is None or self.z0 is None:
            return None
        return float(np.linalg.norm(self.z - self.z0))

    def record(self) -> dict:
        """JSON-ready summary (no images)."""
        history = self.loss_history
        distance = self.z_distance
        return {
            "source_category": self.source_label,
            "source_category_given": self.source_given,
            "source_estimated_by": self.source_by,
            "source_confidence": None if self.source_confidence is None
            else round(self.source_confidence, 4),
            "source_years": None if self.source_years is None else round(self.source_years, 1),
            "method": self.optimize,
            "optimize": self.optimize,
            "strength": self.strength,
            "steps": self.steps,
            "loss_start": round(history[0], 6) if history else None,
            "loss_end": round(min(history), 6) if history else None,
            "z0_distance": None if distance is None else round(distance, 4),
            "seconds": round(self.seconds, 3),
            "detail_side": None if self.detail is None else int(self.detail.shape[0]),
            "landmarks": self.landmarks,
        }


def add_change(photo: np.ndarray, change: np.ndarray, gray: bool | None = None) -> np.ndarray:
    """uint8 crop (D, D, 3) + a change (n, S, S, 3) in [-1, 1] units computed at S px ->
    uint8 (n, D, D, 3): the change resized to D (bicubic; D = S adds it as it is) and added,
    brightness only on a greyscale crop (``gray`` None: decided from the crop)."""
    change = np.asarray(change, np.float32)
    side = photo.shape[0]
    if change.shape[1] != side:
        change = np.stack([np.stack([np.asarray(Image.fromarray(c[..., k], mode="F").resize(
            (side, side), Image.Resampling.BICUBIC)) for k in range(3)], axis=-1)
            for c in change])
    if is_gray(photo[None])[0] if gray is None else gray:
        change = np.repeat(change.mean(axis=-1, keepdims=True), 3, axis=-1)
    aged = np.clip(normalize(photo)[None] + change, -1.0, 1.0)
    return np.clip(np.rint((aged + 1.0) * 127.5), 0, 255).astype(np.uint8)
