"""TensorBoard logging for a stage, with a JSON-lines copy of every scalar window.

Events are written through the ``tensorboard`` package's own event writer
(``tensorboard.summary.writer.event_file_writer`` and the protos in ``tensorboard.compat.proto``,
as PyTorch's SummaryWriter does), never ``tf.summary``: a JAX-only install (the GPU machine has
``tensorboard`` but no TensorFlow) is watched exactly as a TensorFlow one. The values are the
tensor summaries ``tf.summary`` writes (scalar, image and text plugins' metadata), so runs
logged before read the same, and a resumed run never mixes two forms of one tag.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np

from age_cgan.files import atomic_path, writing
from age_cgan.visualize import save_png

#: What the stage's logs are called in a refused write's message (``files.WriteFailed``).
EVENTS, METRICS, SAMPLE = "the TensorBoard events", "the metrics log", "a sample grid"


class EventWriter:
    """One ``events.out.tfevents.*`` file in ``logdir``, written without TensorFlow.

    ``scalar`` / ``image`` / ``text`` write what ``tf.summary.scalar`` / ``.image`` / ``.text``
    write: a float32 tensor, a string tensor [width, height, PNG] and a string tensor, each with
    its plugin's metadata.
    """

    def __init__(self, logdir):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._writer = EventFileWriter(str(logdir))

    def _add(self, step, tag, value, plugin_metadata):
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.util import tensor_util

        entry = summary_pb2.Summary.Value(tag=tag, tensor=tensor_util.make_tensor_proto(value),
                                          metadata=plugin_metadata)
        self._writer.add_event(event_pb2.Event(
            wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=[entry])))

    def scalar(self, step: int, tag: str, value: float) -> None:
        from tensorboard.plugins.scalar import metadata

        self._add(step, tag, np.float32(value), metadata.create_summary_metadata(None, None))

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        """``image``: uint8 (H, W, 3)."""
        from PIL import Image
        from tensorboard.plugins.image import metadata

        png = io.BytesIO()
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(png, format="PNG")
        height, width = image.shape[:2]
        value = np.array([str(width).encode(), str(height).encode(), png.getvalue()], object)
        self._add(step, tag, value, metadata.create_summary_metadata(None, None))

    def text(self, step: int, tag: str, text: str) -> None:
        from tensorboard.plugins.text import metadata

        self._add(step, tag, np.array(text.encode("utf-8"), object),
                  metadata.create_summary_metadata(None, None))

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def truncate_metrics(path: Path, step: int) -> int:
    """Drop the lines of ``metrics.jsonl`` after ``step``; returns how many were dropped.

    A stage resumed from its checkpoint at ``step`` logs the steps after it again; the lines a
    killed process wrote past its last checkpoint would otherwise appear twice (and a stage
    started over would append to its old run). A torn last line is dropped too.
    """
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            keep = int(json.loads(line)["step"]) <= step
        except (ValueError, KeyError, TypeError):
            keep = False
        if keep:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        with atomic_path(path, METRICS) as tmp:
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    return dropped


class StageLogger:
    """A stage's logs. A refused write (full disk, ...) is ``files.WriteFailed`` naming the
    file; a torn last line of ``metrics.jsonl`` is dropped on resume (``truncate_metrics``)."""

    def __init__(self, logdir, start: int = 0):
        """Log into ``logdir``; ``metrics.jsonl`` keeps only the steps up to ``start`` (the
        step the stage starts from) before new lines are appended."""
        self.logdir = Path(logdir)
        self._metrics = self.logdir / "metrics.jsonl"
        with writing(self.logdir, EVENTS):
            self.logdir.mkdir(parents=True, exist_ok=True)
            self._writer = EventWriter(self.logdir)
        truncate_metrics(self._metrics, start)
        with writing(self._metrics, METRICS):
            self._jsonl = open(self._metrics, "a", encoding="utf-8")

    def scalars(self, step: int, values: dict) -> None:
        with writing(self._metrics, METRICS):
            self._jsonl.write(json.dumps({"step": int(step),
                                          **{k: float(v) for k, v in values.items()}}) + "\n")
            self._jsonl.flush()
        with writing(self.logdir, EVENTS):
            for tag, value in values.items():
                self._writer.scalar(step, tag, float(value))
            self._writer.flush()

    def image(self, step: int, tag: str, grid: np.ndarray) -> Path:
        """Log a uint8 (H, W, 3) grid to TensorBoard and save it as samples/<tag>_<step>.png."""
        path = self.logdir / "samples" / f"{tag.replace('/', '_')}_{int(step):07d}.png"
        save_png(grid, path, SAMPLE)
        with writing(self.logdir, EVENTS):
            self._writer.image(step, tag, grid)
            self._writer.flush()
        return path

    def text(self, step: int, tag: str, text: str) -> None:
        with writing(self.logdir, EVENTS):
            self._writer.text(step, tag, text)

    def close(self) -> None:
        """Close both files (both are tried: a full disk may refuse the first)."""
        try:
            with writing(self._metrics, METRICS):
                self._jsonl.close()
        finally:
            with writing(self.logdir, EVENTS):
                self._writer.close()


class NullLogger:
    """A StageLogger that writes nothing: processes other than 0 in a multi-host run."""

    def scalars(self, step, values):
        pass

    def image(self, step, tag, grid):
        return None

    def text(self, step, tag, text):
        pass

    def close(self):
        pass
