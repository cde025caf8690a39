"""The step loop shared by every stage: progress, TensorBoard, checkpoints, clean stops.

``fit`` runs steps ``start+1..total`` of one compiled ``backend.Step``: a progress bar, scalar
windows (means) and image grids to TensorBoard, checkpoints every ``checkpoint_every`` steps and
at the end, a stop after a whole step on Ctrl-C or SIGTERM, and a clear stop on a non-finite
loss. What to train, in which order, and whether to resume is ``training.orchestration``'s.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time

import numpy as np
from tqdm.auto import tqdm

from age_cgan.backend import Step
from age_cgan.errors import AgeCganError
from age_cgan.training.logging import NullLogger, StageLogger


class NonFiniteLoss(AgeCganError, RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is left as it was."""


class OutOfMemory(AgeCganError, MemoryError):
    """A training step could not allocate its batch (RAM or accelerator memory); the message
    names the batch size, a smaller one, and the checkpoint that is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped a stage after a whole step, which was checkpointed."""

    def __init__(self, stage: str, step: int):
        self.stage, self.step = stage, step
        super().__init__(f"stage {stage} stopped after step {step}, which is checkpointed")


@contextlib.contextmanager
def _deferred_interrupts():
    """Turn the first SIGINT/SIGTERM into a flag the loop reads between steps.

    A step is never cut in half (D updated, G not), so the loop can finish it, write an exact
    checkpoint and stop. A second Ctrl-C interrupts at once. A signal the process was started
    ignoring stays ignored (as for a job that a script started with `&`, which must not die
    with the script's Ctrl-C); outside the main thread (where Python cannot install handlers)
    signals keep their usual behaviour.
    """
    received = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame):
        if received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(signum)
        print(f"\n{signal.Signals(signum).name}: stopping after this step and saving a "
              "checkpoint (Ctrl-C again to stop at once)", flush=True)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(sig) is not signal.SIG_IGN}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def fit(step_fn: Step, next_batch, *, name, logdir, start, total, batch_size, log_every,
        sample_every, checkpoint_every, progress, save, samples=None, before_final=None,
        config_text=None, write=True) -> list[dict]:
    """Steps start+1..total of one stage with progress, scalar windows, grids and checkpoints.

    ``save(step)`` writes the checkpoint (after ``step_fn.sync()``); ``samples()`` returns
    tag -> uint8 grid (or a number: a figure measured on the samples, logged as a scalar);
    checkpoint (e.g. BatchNorm recalibration). Returns the logged windows' means.

    Ctrl-C or SIGTERM stops the stage after the step in progress: its scalars are logged, that
    step is checkpointed (so ``--resume`` continues exactly) and ``TrainingInterrupted`` is
    raised. ``write=False`` (processes other than 0 on several hosts) logs nothing.
    """
    logger = StageLogger(logdir, start=start) if write else NullLogger()
    if config_text:
        logger.text(0, f"stage{name}/config", config_text)
    history, window = [], []
    bar = tqdm(total=total, initial=start, desc=f"stage {name}", disable=not progress,
               unit="step", dynamic_ncols=True)
    timer = time.perf_counter()
    finished = False
    with _deferred_interrupts() as interrupted:
        try:
            for step in range(start + 1, total + 1):
                window.append(step_fn(next_batch()))
                bar.update(1)
                at_end = step == total
                checkpoint_now = step % checkpoint_every == 0 or at_end
                stopping = bool(interrupted) and not at_end
                if step % log_every == 0 or checkpoint_now or stopping:
                    window = [{k: float(v) for k, v in m.items()} for m in window]  # syncs
                    means = _flush(window, step, name, batch_size, time.perf_counter() - timer,
                                   logger)
                    history.append({"step": step, **means})
                    bar.set_postfix(_postfix(means))
                    window = []
                if samples is not None and (step % sample_every == 0 or at_end):
                    step_fn.sync()
                    drawn = samples()
                    figures = {k: v for k, v in drawn.items() if np.ndim(v) == 0}
                    if figures:  # figures measured on the samples (e.g. validation shares)
                        logger.scalars(step, figures)
                    for tag, grid in drawn.items():
                        if tag not in figures:
                            logger.image(step, tag, grid)
                if at_end and before_final is not None:
                    step_fn.sync()
                    before_final()
                    step_fn.reset()
                if checkpoint_now or stopping:
                    step_fn.sync()
                    save(step)
                if stopping:
                    raise TrainingInterrupted(name, step)
                if not window:  # images/sec counts training steps, not sampling or saving
                    timer = time.perf_counter()
            step_fn.sync()
            finished = True
        finally:
            bar.close()
            if finished:
                logger.close()
            else:  # a second failure (the full disk again) must not hide the first one
                with contextlib.suppress(Exception):
                    logger.close()
    return history


def _flush(window, step, stage_name, batch_size, elapsed, logger) -> dict:
    """Mean of each scalar over the window; stop on a non-finite loss."""
    values = {key: np.array([float(m[key]) for m in window]) for key in window[0]}
    for key, series in values.items():
        bad = np.flatnonzero(~np.isfinite(series))
        if bad.size:
            first = step - len(window) + 1 + int(bad[0])
            raise NonFiniteLoss(
                f"stage {stage_name}: {key} became {series[bad[0]]} at step {first}. Training "
                "stopped; the last checkpoint was written before this window and is intact. "
                "Try a lower learning rate, or check the data."
            )
    means = {key: float(series.mean()) for key, series in values.items()}
    means[f"perf/stage{stage_name}/images_per_sec"] = len(window) * batch_size / max(elapsed, 1e-9)
    means[f"perf/stage{stage_name}/sec_per_step"] = elapsed / len(window)
    logger.scalars(step, means)
    return means


def _postfix(means: dict) -> dict:
    """The losses and throughput of the last window, short enough for one terminal line."""
    shown = {k.rsplit("/", 1)[-1]: f"{v:.3f}" for k, v in means.items() if "/loss/" in k}
    speed = [v for k, v in means.items() if k.endswith("images_per_sec")]
    if speed:
        shown["img/s"] = f"{speed[0]:.1f}"
    return shown


__all__ = ["NonFiniteLoss", "OutOfMemory", "TrainingInterrupted", "fit"]
