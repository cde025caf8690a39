"""Seeded mini-batches from the in-memory face array: shuffled each epoch, flipped on the fly.

Batches are numpy arrays, so the same sampler feeds the TensorFlow and the JAX backends and
draws identical batches under both. Its state (epoch, position, RNG) round-trips through JSON so
a resumed run continues with the batches it would have drawn.
"""

from __future__ import annotations

import copy

import numpy as np

from age_cgan.data.images import normalize
from age_cgan.errors import SettingError, setting

STATE_VERSION = 1


class SamplerStateMismatch(ValueError):
    """A saved sampler state is for another batch size or other rows than this sampler's."""

    def __init__(self, key: str, stored, mine):
        self.key, self.stored, self.mine = key, stored, mine
        super().__init__(f"sampler state is for {key}={stored}, this one has {mine}")


def _encode(value):
    """numpy bit-generator state -> JSON: 128-bit integers become hex strings."""
    if isinstance(value, dict):
        return {key: _encode(item) for key, item in value.items()}
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return hex(int(value)) if abs(int(value)) >= 2**53 else int(value)
    return value


def _decode(value):
    if isinstance(value, dict):
        return {key: _decode(item) for key, item in value.items()}
    if isinstance(value, str) and value.startswith(("0x", "-0x")):
        return int(value, 16)
    return value


class BatchSampler:
    """Endless seeded batches of (image, one-hot age) from uint8 faces.

    Each epoch visits the rows in a fresh permutation; the last incomplete batch of an epoch is
    skipped so every batch has ``batch_size`` rows (one compiled step shape). ``indices``
    restricts sampling to some rows (e.g. the training split) without copying the images.

    ``next()`` returns ``{"image": float32 (B, H, W, 3) in [-1, 1], "age": float32 (B, num_ages)}``.
    """

    def __init__(self, images: np.ndarray, categories: np.ndarray, num_ages: int,
                 batch_size: int, seed: int = 0, flip: bool = True, indices=None):
        images = np.asarray(images)
        categories = np.asarray(categories, dtype=np.int64)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be (N, H, W, 3), got {images.shape}")
        if len(categories) != len(images):
            raise ValueError(f"{len(images)} images but {len(categories)} categories")
        if categories.size and (categories.min() < 0 or categories.max() >= num_ages):
            raise ValueError(f"categories must lie in 0..{num_ages - 1}")
        rows = np.arange(len(images)) if indices is None else np.asarray(indices)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        if batch_size < 1 or len(rows) < batch_size:
            raise SettingError(f"{setting('batch_size', batch_size)} needs 1 to {len(rows)} "
                               f"(the faces to draw from): pass "
                               f"{setting('batch_size', max(1, len(rows)))} or less, or more "
                               "faces")
        self.images = images
        self.categories = categories
        self.num_ages = int(num_ages)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.flip = bool(flip)
        self._rows = rows.astype(np.int64)
        self._one_hot = np.eye(self.num_ages, dtype=np.float32)
        self._rng = np.random.default_rng(self.seed)
        self.epoch = -1
        self._new_epoch()

    @property
    def steps_per_epoch(self) -> int:
        return len(self._rows) // self.batch_size

    @property
    def position(self) -> int:
        """Rows of the current epoch's permutation already drawn."""
        return self._position

    def _new_epoch(self):
        self._epoch_rng_state = copy.deepcopy(self._rng.bit_generator.state)
        self._order = self._rows[self._rng.permutation(len(self._rows))]
        self._position = 0
        self.epoch += 1

    def next_rows(self) -> np.ndarray:
        """The rows of the next batch (B,), without reading any image."""
        if self._position + self.batch_size > len(self._order):
            self._new_epoch()
        rows = self._order[self._position:self._position + self.batch_size]
        self._position += self.batch_size
        return rows

    def next(self) -> dict[str, np.ndarray]:
        rows = self.next_rows()
        images = np.take(self.images, rows, axis=0)
        if self.flip:
            mirrored = self._rng.random(self.batch_size) < 0.5
            images[mirrored] = images[mirrored, :, ::-1]
        return {"image": normalize(images), "age": self._one_hot[self.categories[rows]]}

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return self.next()

    def get_state(self) -> dict:
        """JSON-serialisable state: epoch, position and the numpy Generator state."""
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "num_rows": len(self._rows),
            "batch_size": self.batch_size,
            "epoch": self.epoch,
            "position": self._position,
            "epoch_rng": _encode(self._epoch_rng_state),
            "rng": _encode(self._rng.bit_generator.state),
        }

    def set_state(self, state: dict) -> None:
        """Restore ``get_state()`` output; the next batches equal those the saved run drew."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unknown sampler state version {state.get('version')}")
        for key, mine in (("num_rows", len(self._rows)), ("batch_size", self.batch_size)):
            if state[key] != mine:
                raise SamplerStateMismatch(key, state[key], mine)
        # Redraw the epoch's permutation from the RNG state it was drawn with, then resume.
        self._rng.bit_generator.state = _decode(state["epoch_rng"])
        self._new_epoch()
        self.epoch = int(state["epoch"])
        self._position = int(state["position"])
        self._rng.bit_generator.state = _decode(state["rng"])
