"""Checkpoints: one .npz per stage holding everything needed to resume exactly.

Weights and optimiser slots of the networks a stage trains, non-trainable state (BatchNorm
statistics, dropout seeds), the step, the numpy RNG and sampler state (JSON), and fixed arrays
such as the latent grid. Written to a temporary name and renamed, so a crash never leaves a
half-written checkpoint; read with ``allow_pickle=False``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from age_cgan.errors import setting
from age_cgan.files import atomic_path
from age_cgan.runs import RunFolderError

FORMAT = 1


class DamagedCheckpoint(RunFolderError):
    """A checkpoint file exists but cannot be read whole (truncated, corrupt, not ours)."""

    def __init__(self, path, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(
            f"{path} is damaged: {problem}. It cannot be resumed; pass "
            f"{setting('overwrite', True)} to start the stage again (the damaged file is "
            "replaced), or put back a good copy."
        )


class CheckpointExists(RunFolderError):
    """A stage already has a checkpoint and the command said neither resume nor overwrite."""

    def __init__(self, stage: str, run, step: int, path):
        self.stage, self.step, self.path = stage, step, Path(path)
        super().__init__(
            f"stage {stage} of {run} already has a checkpoint at step {step} ({path}). Pass "
            f"{setting('resume', True)} to continue it, or {setting('overwrite', True)} to "
            "start the stage again.")


class SettingsChanged(RunFolderError):
    """A stage's checkpoint was written with other batches than this command would draw (another
    batch size, other training faces): resuming it exactly is impossible."""

    def __init__(self, stage: str, path, step: int, key: str, stored, mine):
        self.stage, self.path, self.step = stage, Path(path), step
        self.key, self.stored, self.mine = key, stored, mine
        where = f"stage {stage}'s checkpoint at step {step} ({path})"
        if key == "batch_size":
            message = (
                f"{where} was written with {setting('batch_size', stored)}; this command asks "
                f"for {mine}, and a resumed stage must draw the batches it would have drawn. "
                f"Pass {setting('batch_size', stored)} to continue it, or "
                f"{setting('overwrite', True)} to start the stage again with batch size {mine} "
                "(its checkpoint is replaced).")
        else:
            message = (
                f"{where} was written for {stored} training faces; the data now gives {mine} "
                f"({setting('data')}, {setting('test_fraction')} or {setting('seed')} changed, "
                "or images were added or removed). Pass the data and settings it was trained "
                f"with to continue it, or {setting('overwrite', True)} to start the stage again "
                "on this data (its checkpoint is replaced).")
        super().__init__(message)


def stored_state(path) -> dict:
    """The JSON state a checkpoint holds (sampler, RNG), read without its arrays."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            return json.loads(str(stored["meta"]))["state"]
    except Exception as error:
        raise DamagedCheckpoint(path, _read_error(error)) from error


def _read_error(error: Exception) -> str:
    if isinstance(error, zipfile.BadZipFile):
        return f"not a whole .npz archive ({error}; truncated by a full disk or a copy?)"
    return f"{type(error).__name__}: {error}"


def _variables(prefix, variables):
    return {f"{prefix}/{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(variables)}


def save_checkpoint(path, models: dict, optimizers: dict, step: int, state: dict, arrays: dict):
    """Write ``path`` atomically. ``state`` must be JSON-serialisable; ``arrays`` numpy.

    A refused write (full disk, file-size limit, ...) is ``files.WriteFailed``; the earlier
    checkpoint is then unchanged."""
    payload = {}
    for name, model in models.items():
        payload.update(_variables(f"model/{name}", model.variables))
    for name, optimizer in optimizers.items():
        payload.update(_variables(f"optimizer/{name}", optimizer.variables))
    for key, value in arrays.items():
        payload[f"array/{key}"] = np.asarray(value)
    meta = {"format": FORMAT, "step": int(step), "state": state}
    payload["meta"] = np.array(json.dumps(meta))
    with atomic_path(path, f"the checkpoint of step {step}") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **payload)
        handle.flush()
        os.fsync(handle.fileno())


def _assign(prefix, variables, stored, path):
    for i, variable in enumerate(variables):
        key = f"{prefix}/{i:04d}"
        if key not in stored:
            raise ValueError(f"{path} has no {key}: it was written by different networks")
        value = stored[key]
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(
                f"{path}: {variable.path} has shape {tuple(variable.shape)} but the checkpoint "
                f"holds {tuple(value.shape)}; the run's settings changed since it was written"
            )
        variable.assign(value)


def load_checkpoint(path, models: dict, optimizers: dict):
    """Restore into built models and optimisers; returns (step, state, arrays)."""
    path = Path(path)
    try:
        stored = np.load(path, allow_pickle=False)
        meta = json.loads(str(stored["meta"]))
    except Exception as error:
        raise DamagedCheckpoint(path, _read_error(error)) from error
    with stored:
        try:
            for name, model in models.items():
                _assign(f"model/{name}", model.variables, stored, path)
            for name, optimizer in optimizers.items():
                _assign(f"optimizer/{name}", optimizer.variables, stored, path)
            arrays = {k[len("array/"):]: stored[k] for k in stored.files if k.startswith("array/")}
        except (zipfile.BadZipFile, OSError, EOFError) as error:  # a corrupt member
            raise DamagedCheckpoint(path, _read_error(error)) from error
    return meta["step"], meta["state"], arrays


def checkpoint_step(path) -> int | None:
    """The step stored in a checkpoint, or None when there is none.

    Reads every member (CRC checked, ~1 s per 400 MB) so that a damaged file is found before a
    command writes anything; raises DamagedCheckpoint naming the file and what to do.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        if bad is not None:
            raise zipfile.BadZipFile(f"member {bad} fails its checksum")
        with np.load(path, allow_pickle=False) as stored:
            step = json.loads(str(stored["meta"]))["step"]
    except Exception as error:
        raise DamagedCheckpoint(path, _read_error(error)) from error
    if not isinstance(step, int) or step < 0:
        raise DamagedCheckpoint(path, f"its stored step is {step!r}")
    return step


def checkpoint_state(path) -> tuple[int | None, DamagedCheckpoint | None]:
    """(stored step or None, the damage or None): for callers that may start over a bad file."""
    try:
        return checkpoint_step(path), None
    except DamagedCheckpoint as damage:
        return None, damage


@dataclasses.dataclass(frozen=True)
class Resumption:
    """What a stage does with its checkpoint file: resume from ``step``, or start at step 0
    (``step`` None); ``note`` says which for the dry run ("" for a stage with no checkpoint)."""

    step: int | None
    note: str = ""


def resumption(path, stage: str, run, resume: bool, overwrite: bool) -> Resumption:
    """The one resume-or-refuse rule, for training and for the dry run alike.

    A checkpoint is continued with ``resume``, started over with ``overwrite``, and otherwise
    refused (CheckpointExists), so no work is lost by a repeated command; a damaged checkpoint
    can only be started over (DamagedCheckpoint without ``overwrite``).
    """
    stored, damage = checkpoint_state(path)
    if damage is not None:
        if not overwrite:
            raise damage
        return Resumption(None, "starts over its damaged checkpoint "
                          f"({setting('overwrite', True)})")
    if stored is None:
        return Resumption(None, "")
    if resume:
        return Resumption(stored, f"resumes its checkpoint at step {stored}")
    if overwrite:
        return Resumption(None, f"starts over its checkpoint at step {stored} "
                          f"({setting('overwrite', True)})")
    raise CheckpointExists(stage, run, stored, path)
