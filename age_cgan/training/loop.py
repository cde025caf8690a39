"""The training loop shared by every stage: progress, TensorBoard, checkpoints, resume.

``train(config)`` runs one stage or all three in order inside one run folder. A stage resumes
from ``RUN/stage<N>/checkpoint.npz`` with ``resume=True``; it refuses to start over a checkpoint
unless ``overwrite=True``, so no work is lost by a repeated command.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time

import keras
import numpy as np
from tqdm.auto import tqdm

from age_cgan.config import NETWORK_KEYS, STAGES, TrainConfig
from age_cgan.runs import RunFolder, RunFolderError, load_dataset_for_run
from age_cgan.training.bridge import BACKEND, Step
from age_cgan.training.checkpoint import checkpoint_state, load_checkpoint, save_checkpoint
from age_cgan.training.devices import device_count, is_chief, placement as device_placement
from age_cgan.training.logging import NullLogger, StageLogger
from age_cgan.training.stages import (RUN_FR, STAGE_CLASSES, face_recognizer_weights,
                                      missing_models)


MAKES = {"1": ("generator", "discriminator"), "2": ("encoder",), "3": (), "fr": ("face_recognizer",)}


class NonFiniteLoss(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is left as it was."""


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


def resolve_config(config: TrainConfig) -> TrainConfig:
    """Take the network settings a run folder already fixed; refuse conflicting ones."""
    run = RunFolder(config.run)
    if not run.config_path.is_file():
        return config
    stored = run.read_config()
    defaults = TrainConfig()
    changes = {}
    for key in NETWORK_KEYS:
        mine, theirs = getattr(config, key), stored.get(key)
        if theirs is None or mine == theirs:
            continue
        if mine != getattr(defaults, key):
            raise RunFolderError(
                f"{run.path} was trained with {key}={theirs!r}; this command asks for {mine!r}. "
                "Use another --run folder for other network settings."
            )
        changes[key] = theirs
    if config.data is None and stored.get("data"):
        changes["data"] = stored["data"]
    return config.replace(**changes)


def load_data(config: TrainConfig):
    dataset = load_dataset_for_run(config.to_dict(), progress=config.progress)
    if config.progress:
        print(dataset.summary.format())
    return dataset


def _prepare(config: TrainConfig):
    """What ``train`` and ``plan`` check and load first: (the config with the run folder's
    settings, the run folder, the stages in order, the data or None when no stage needs it)."""
    config = resolve_config(config)
    run = RunFolder(config.run)
    stages = STAGES if config.stage == "all" else (config.stage,)
    _check_ready(run, stages, config)
    device_count(config.devices, config.batch_size)  # an uneven split fails before any work
    dataset = None
    if any(s == "fr" or STAGE_CLASSES[s].needs_data for s in stages):
        dataset = load_data(config)
        _check_batch(config, dataset, stages)
    return config, run, stages, dataset


def _check_batch(config: TrainConfig, dataset, stages) -> None:
    """A batch must fit in the training faces (the sampler draws without replacement)."""
    train_size = len(dataset.train())
    if any(s != "2" for s in stages) and config.batch_size > train_size:
        raise ValueError(
            f"--batch-size {config.batch_size} is larger than the {train_size} training faces "
            f"of {config.data}: pass --batch-size {train_size} or less, or more data")


def _check_checkpoints(run: RunFolder, stages, config: TrainConfig) -> None:
    """Refuse before anything is written: a stage with a checkpoint needs --resume or
    --overwrite, and a damaged checkpoint can only be started over (--overwrite)."""
    for stage in stages:
        path = run.stage_dir(stage) / "checkpoint.npz"
        step, damage = checkpoint_state(path)
        if damage is not None and not config.overwrite:
            raise damage
        if step is not None and not (config.resume or config.overwrite):
            raise RunFolderError(
                f"stage {stage} of {config.run} already has a checkpoint at step {step} "
                f"({path}). Pass --resume to continue it, or --overwrite to start the stage "
                "again.")


def train(config: TrainConfig) -> dict:
    """Run ``config.stage`` (or all stages) and return the last scalar window of each stage.

    Everything is checked before the run folder is written (its config, the stage order, the
    checkpoints, the data and the batch size), under the run folder's lock (RunFolder.lock):
    a refused command leaves the folder as it was, and a second trainer is refused.
    """
    # Several hosts: process 0 holds the lock and writes; the others only train.
    with RunFolder(config.run).lock() if is_chief() else contextlib.nullcontext():
        config, run, stages, dataset = _prepare(config)
        _check_checkpoints(run, stages, config)
        if config.mixed_precision:
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
        stored = run.read_config() if run.config_path.is_file() else {}
        if is_chief():
            run.write_config({**stored, **config.to_dict(), "backend": BACKEND,
                              "device_count": device_count(config.devices)})
        results = {}
        for stage in stages:
            run_one = train_face_recognizer_stage if stage == "fr" else run_stage
            results[stage] = run_one(config, stage, dataset)
        return results


def plan(config: TrainConfig) -> list[dict]:
    """What ``train(config)`` would do, without training or writing to the run folder.

    Checks what ``train`` checks first (the run folder's network settings, earlier stages'
    models, the data) and returns one row per stage: its steps, where it would start, the
    images and epochs that means, and what stops it (a checkpoint without --resume or
    --overwrite). The data is decoded (and cached) as for training, so a bad path fails here.
    """
    config, run, stages, dataset = _prepare(config)
    train_size = None if dataset is None else len(dataset.train())
    rows = []
    holder = run.holder()
    for name in stages:
        total = config.total_steps(name, train_size)
        stored, damage = checkpoint_state(run.stage_dir(name) / "checkpoint.npz")
        start, note = 0, ""
        if damage is not None:
            note = ("starts over its damaged checkpoint (--overwrite)" if config.overwrite
                    else f"refused: {damage}")
        elif stored is not None and config.resume:
            start = min(stored, total)
        elif stored is not None and not config.overwrite:
            note = f"refused: a checkpoint at step {stored} exists; pass --resume or --overwrite"
        elif stored is not None:
            note = f"starts over its checkpoint at step {stored} (--overwrite)"
        if name == "3":
            note = "; ".join(filter(None, [note, "FR: " + _fr_source(run, config)]))
        if holder is not None:
            note = "; ".join(filter(None, [f"refused now: process {holder} is training in "
                                           "this run folder", note]))
        images = (total - start) * config.batch_size
        epochs = None if name == "2" or not train_size else images / train_size
        rows.append({"stage": name, "start": start, "total": total,
                     "batch_size": config.batch_size, "images": images, "epochs": epochs,
                     "note": note})
    return rows


def _fr_source(run, config) -> str:
    weights = face_recognizer_weights(run, config)
    if weights == RUN_FR:
        return f"the run's trained {run.model_path('face_recognizer')}"
    if weights == "imagenet":
        return "InceptionResNetV2 with ImageNet weights (a download; untrained head)"
    if weights == "none":
        return "a random InceptionResNetV2 (smoke tests only)"
    return f"InceptionResNetV2 with the weights in {weights}"


def format_plan(config: TrainConfig, rows: list[dict]) -> str:
    lines = [f"dry run of {config.run} on the {BACKEND} backend: nothing was trained or written",
             "stage  steps               batch  images       epochs  notes"]
    for row in rows:
        steps = f"{row['start'] + 1}-{row['total']}" if row["start"] < row["total"] else "done"
        epochs = "-" if row["epochs"] is None else f"{row['epochs']:.2f}"
        lines.append(f"{row['stage']:<6} {steps:<19} {row['batch_size']:<6} "
                     f"{row['images']:<12,} {epochs:<7} {row['note']}")
    return "\n".join(lines)


def train_face_recognizer_stage(config: TrainConfig, stage_name: str, dataset) -> dict:
    """``--stage fr``: distil FR from dlib's descriptors (see training/face_recognizer.py)."""
    from age_cgan.training.face_recognizer import train_face_recognizer

    weights = config.fr_weights or "none"  # None here: a random backbone trained end to end
    summary = train_face_recognizer(
        config.run, dataset, steps=config.total_steps("fr", len(dataset.train())),
        batch_size=config.batch_size, learning_rate=config.lr_fr,
        input_size=config.fr_input_size, weights=weights, log_every=config.log_every,
        checkpoint_every=config.checkpoint_every, resume=config.resume,
        overwrite=config.overwrite, seed=config.seed, progress=config.progress,
        devices=config.devices,
    )
    if config.progress:
        print(f"stage fr: agreement with the teacher on held-out faces: {summary['agreement']}")
    return summary


def _check_ready(run, stages, config):
    """Fail before any work when a stage lacks what an earlier one makes."""
    made = set()
    for stage in stages:
        missing = [m for m in missing_models(run, stage, config) if m not in made]
        if missing:
            needed = ", ".join(f"models/{m}.keras" for m in missing)
            earlier = "1" if "generator" in missing or "discriminator" in missing else "2"
            raise RunFolderError(
                f"stage {stage} needs {needed} in {run.path}, which an earlier stage writes: "
                f"run `python train.py --stage {earlier} --run {run.path}` first "
                "(or --stage all)."
            )
        made.update(MAKES[stage])


def run_stage(config: TrainConfig, stage_name: str, dataset=None) -> dict:
    """Train one stage to its total steps; returns the means of the last logged window."""
    run = RunFolder(config.run)
    devices = device_placement(config.devices, config.batch_size)
    keras.utils.set_random_seed(config.seed)  # network initialisation (and dropout seeds)
    with devices.scope():  # variables replicated on every device (one device: no-op)
        stage = STAGE_CLASSES[stage_name](config, run, dataset)
        step_fn = Step(stage.models, stage.optimizers, stage.updates, placement=devices)
    checkpoint = run.stage_dir(stage_name) / "checkpoint.npz"
    trained = {name: stage.models[name] for name in stage.trained}
    with devices.scope():
        start = _restore(config, stage, step_fn, checkpoint, trained)
    total = config.total_steps(stage_name, None if dataset is None else len(dataset.train()))

    def save(step):
        if devices.is_chief:
            save_checkpoint(checkpoint, trained, stage.optimizers, step, stage.get_state(),
                            stage.fixed)

    history = fit(
        step_fn, stage.next_batch, name=stage_name, logdir=run.stage_dir(stage_name),
        start=start, total=total, batch_size=config.batch_size, log_every=config.log_every,
        sample_every=config.sample_every, checkpoint_every=config.checkpoint_every,
        progress=config.progress, save=save, samples=stage.samples,
        config_text=_config_markdown(config) if start == 0 else None, write=devices.is_chief,
    )
    for name in stage.trained if devices.is_chief else ():
        run.save_model(stage.models[name], name)
    return history[-1] if history else {}


def fit(step_fn: Step, next_batch, *, name, logdir, start, total, batch_size, log_every,
        sample_every, checkpoint_every, progress, save, samples=None, before_final=None,
        config_text=None, write=True) -> list[dict]:
    """Steps start+1..total of one stage with progress, scalar windows, grids and checkpoints.

    ``save(step)`` writes the checkpoint (after ``step_fn.sync()``); ``samples()`` returns
    tag -> uint8 grid; ``before_final()`` runs on the synced variables before the last
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
                    for tag, grid in samples().items():
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
        finally:
            bar.close()
            logger.close()
    return history


def _restore(config, stage, step_fn, checkpoint, trained) -> int:
    stored_step, damage = checkpoint_state(checkpoint)
    if damage is not None:
        if not config.overwrite:
            raise damage
        if config.progress:
            print(f"starting stage {stage.name} over its damaged {checkpoint} (--overwrite)")
        return 0
    if stored_step is None:
        if config.resume and config.progress:
            print(f"no checkpoint at {checkpoint}: stage {stage.name} starts at step 0")
        return 0
    if not config.resume:
        if not config.overwrite:
            raise RunFolderError(
                f"stage {stage.name} of {config.run} already has a checkpoint at step "
                f"{stored_step} ({checkpoint}). Pass --resume to continue it, or --overwrite to "
                "start the stage again."
            )
        return 0
    step, state, arrays = load_checkpoint(checkpoint, trained, stage.optimizers)
    stage.set_state(state)
    stage.fixed = {key: arrays[key] for key in stage.fixed}
    step_fn.reset()
    if config.progress:
        print(f"resumed stage {stage.name} from {checkpoint} at step {step}")
    return step


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


def _config_markdown(config: TrainConfig) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in config.to_dict().items())
    return f"| setting | value |\n|---|---|\n{rows}"


__all__ = ["NonFiniteLoss", "TrainingInterrupted", "format_plan", "plan", "resolve_config",
           "run_stage", "train"]
