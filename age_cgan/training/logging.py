"""TensorBoard logging for a stage, with a JSON-lines copy of every scalar window.

Uses ``tf.summary`` when TensorFlow is importable. Where it is not (the JAX-only GPU machine),
TensorBoard events are skipped with one warning and the run goes on: scalars still go to
``metrics.jsonl`` and grids to PNG files.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import keras
import numpy as np

from age_cgan.visualize import save_png


def _summary_writer(logdir: Path):
    try:
        import tensorflow as tf
    except ImportError:
        warnings.warn(
            "TensorFlow is not installed: no TensorBoard events are written; scalars go to "
            f"{logdir / 'metrics.jsonl'} and grids to {logdir / 'samples'}",
            stacklevel=3,
        )
        return None
    if keras.backend.backend() != "tensorflow":
        tf.config.set_visible_devices([], "GPU")  # logging only: leave the GPU to the backend
    return tf.summary.create_file_writer(str(logdir))


class StageLogger:
    def __init__(self, logdir):
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._writer = _summary_writer(self.logdir)
        self._jsonl = open(self.logdir / "metrics.jsonl", "a", encoding="utf-8")

    def scalars(self, step: int, values: dict) -> None:
        self._jsonl.write(json.dumps({"step": int(step), **{k: float(v) for k, v in values.items()}}) + "\n")
        self._jsonl.flush()
        if self._writer is not None:
            import tensorflow as tf

            with self._writer.as_default(step=int(step)):
                for tag, value in values.items():
                    tf.summary.scalar(tag, float(value))

    def image(self, step: int, tag: str, grid: np.ndarray) -> Path:
        """Log a uint8 (H, W, 3) grid to TensorBoard and save it as samples/<tag>_<step>.png."""
        path = self.logdir / "samples" / f"{tag.replace('/', '_')}_{int(step):07d}.png"
        save_png(grid, path)
        if self._writer is not None:
            import tensorflow as tf

            with self._writer.as_default(step=int(step)):
                tf.summary.image(tag, np.asarray(grid, dtype=np.uint8)[None])
        return path

    def text(self, step: int, tag: str, text: str) -> None:
        if self._writer is not None:
            import tensorflow as tf

            with self._writer.as_default(step=int(step)):
                tf.summary.text(tag, text)

    def close(self) -> None:
        self._jsonl.close()
        if self._writer is not None:
            self._writer.close()
