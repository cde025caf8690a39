"""A run is a folder: its layout, its config, and loading its trained networks.

```
RUN/config.json                  the resolved settings of the run (image size, z, age bins, ...)
RUN/models/<network>.keras       the latest finished weights of each network (encoder, generator,
                                 discriminator, face_recognizer), written at the end of a stage
RUN/stage<N>/                    TensorBoard events, checkpoint.npz, samples/*.png, metrics.jsonl
```
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from age_cgan.ages import AgeBins
from age_cgan.errors import AgeCganError, command, raw_message, setting, trained_by
from age_cgan.files import atomic_path, writing

if TYPE_CHECKING:
    import keras

    from age_cgan.config import TrainConfig

NETWORKS = ("encoder", "generator", "discriminator", "face_recognizer", "age_estimator",
            "aging_network", "aging_discriminator")

#: ``face_recognizer_weights``' answer for the run's own trained FR (not a possible file name).
RUN_FR = "<the run's models/face_recognizer.keras>"


class RunFolderError(AgeCganError, RuntimeError):
    """A run folder lacks what a stage or a tool needs; the message says what and how to fix."""


class MissingModel(RunFolderError):
    """``RUN/models/<network>.keras`` is not there: the stage that trains it has not run."""

    def __init__(self, message: str, network: str):
        self.network = network
        super().__init__(message)


class RunLocked(RunFolderError):
    """Another live process is training in this run folder (it holds ``RUN/.lock``)."""


#: Lock files this process holds: resolved run path -> [open file, nesting depth].
_HELD_LOCKS: dict[str, list] = {}

#: ``files.atomic_path``'s temporary names: ``.<stem>.<pid>-<8 hex>.tmp<suffix>``.
_TEMP_NAME = re.compile(r"^\..+\.(\d+)-[0-9a-f]{8}\.tmp(\.[^.]+)?$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def check_keras_file(path, what: str, fix: str) -> None:
    """Raise RunFolderError when ``path`` is not a whole .keras file (a zip archive).

    Keras reports a truncated file as "File not found"; this says what is wrong and ``fix``
    (which may name settings and commands, see ``age_cgan.errors``).
    """
    path = Path(path)
    problem = None
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            if bad is not None:
                problem = f"its member {bad} is corrupt"
    except zipfile.BadZipFile as error:
        problem = f"it is not a whole .keras archive ({error}; truncated or overwritten?)"
    except (OSError, EOFError) as error:
        problem = f"it cannot be read ({type(error).__name__}: {error})"
    if problem:
        raise RunFolderError(f"{path} ({what}) is damaged: {problem}, so Keras cannot load it. "
                             f"{fix}")


def holding_run_lock(function):
    """Decorate ``function(run_dir, ...)`` to run under ``RunFolder(run_dir).lock()``."""

    @functools.wraps(function)
    def locked(run_dir, *args, **kwargs):
        with RunFolder(run_dir).lock():
            return function(run_dir, *args, **kwargs)

    return locked


def write_json_atomic(path, data, what: str | None = None) -> None:
    """Write ``data`` as indented JSON, atomically; a refused write is ``files.WriteFailed``
    naming ``path`` and ``what``."""
    with atomic_path(path, what) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


#: (inputs, outputs) of the networks inference loads: a valid ``.keras`` file of another
#: network (the age estimator given as the aging network) is refused by these counts.
SIGNATURES = {"encoder": (1, 1), "generator": (2, 1), "face_recognizer": (1, 1),
              "age_estimator": (1, 2), "aging_network": (3, 1)}


def load_keras_file(path, network: str, fix: str) -> keras.Model:
    """Load one network from a ``.keras`` file, safely (``safe_mode=True``, so no code in the
    file runs): the one place the project loads Keras files. A damaged or unloadable file, or
    one that holds another network than ``network`` (``SIGNATURES``), is a RunFolderError
    naming it, with ``fix``."""
    check_keras_file(path, network, fix)
    import keras  # here, not at the top: reading a run's config needs no deep-learning stack

    from age_cgan import networks  # noqa: F401  (registers the custom layers for loading)

    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as error:
        raise RunFolderError(f"cannot load {path} as the {network}: {type(error).__name__}: "
                             f"{error}") from error
    _check_signature(model, path, network, fix)
    return model


def _check_signature(model, path, network: str, fix: str) -> None:
    """Refuse a model whose inputs and outputs are not ``network``'s, naming what it looks
    like instead."""
    wanted = SIGNATURES.get(network)
    have = (len(model.inputs), len(model.outputs))
    if wanted is None or have == wanted:
        return
    alike = [name.replace("_", " ") for name, shape in SIGNATURES.items() if shape == have]
    looks = f" (it looks like the {' or the '.join(alike)})" if alike else ""

    def count(n, what):
        return f"{n} {what}{'s' * (n != 1)}"

    raise RunFolderError(
        f"{path} holds a network with {count(have[0], 'input')} and {count(have[1], 'output')}"
        f"{looks}, not the {network.replace('_', ' ')} ({count(wanted[0], 'input')}, "
        f"{count(wanted[1], 'output')}). {fix}")


def face_recognizer_weights(run: RunFolder | None, fr_weights: str | None,
                            default: str = "imagenet") -> str:
    """Which FR a stage or a tool uses: ``RUN_FR`` (the run's trained one, when ``fr_weights``
    is None and the run has it), else ``fr_weights``, else ``default`` ("imagenet", "none" or a
    weights file's path). The one place this choice is made: stage 3 defaults to "imagenet"
    (the book's), stage fr and inference to "none" (a random backbone)."""
    if fr_weights is None and run is not None and run.has_model("face_recognizer"):
        return RUN_FR
    return default if fr_weights is None else fr_weights


def load_face_recognizer(run: RunFolder | None, weights: str, image_size: int, input_size: int,
                         arch: str) -> keras.Model:
    """The FR ``face_recognizer_weights`` chose: the run's trained one, or a freshly built
    one with those backbone weights ("none": random)."""
    if weights == RUN_FR:
        return run.load_model("face_recognizer")
    from age_cgan.networks import build_face_recognizer

    return build_face_recognizer(image_size, weights=None if weights == "none" else weights,
                                 input_size=input_size, arch=arch)


def load_dataset_for_run(config: TrainConfig | dict, data=None, progress: bool = True,
                         image_size: int | None = None, option: str = "image_size"):
    """The run's faces, decoded and split exactly as training does (its data, image_size,
    age_bins, test_fraction, seed and data_cache); ``data`` replaces the run's data and
    ``image_size`` its side. A dict is a stored config.json, read back as a ``TrainConfig``
    (so the defaults are its fields'). Faces smaller than that side are refused, never
    upscaled (``data.survey``: a SettingError naming ``option``, the setting that asked for
    the side, and how to make larger faces)."""
    from age_cgan.config import TrainConfig
    from age_cgan.data import load_dataset
    from age_cgan.data.survey import check_faces

    if isinstance(config, dict):
        config = TrainConfig.from_stored(config)
    data = data or config.data
    if not data:
        raise RunFolderError(f"no data given: pass {setting('data')} (a UTKFace folder, "
                             "wiki.mat / imdb.mat, or a CSV of path,age)")
    side = image_size or config.image_size
    if Path(data).expanduser().exists():  # (a missing source: load_dataset says what is wanted)
        check_faces(data, "data", side=side, for_what=f"{setting(option, side)}",
                    age_bins=config.age_bins, test_fraction=config.test_fraction,
                    seed=config.seed)
    return load_dataset(
        data, image_size=image_size or config.image_size, age_bins=config.age_bins,
        cache_dir=config.data_cache, test_fraction=config.test_fraction, seed=config.seed,
        progress=progress)


class RunFolder:
    def __init__(self, path):
        self.path = Path(path)

    # --- layout -------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    def model_path(self, network: str) -> Path:
        return self.path / "models" / f"{network}.keras"

    def stage_dir(self, stage) -> Path:
        return self.path / f"stage{stage}"

    # --- config -------------------------------------------------------------------------------
    def read_config(self) -> dict:
        """The stored config, checked: valid JSON, an object, each known key of the right type
        and range (``config.check_stored``); a RunFolderError names the file and the key."""
        if not self.config_path.is_file():
            raise RunFolderError(
                f"{self.path} is not a run folder (no config.json); train one with "
                f"{command('train', stage='1', data='PATH', run=str(self.path))}"
            )
        try:
            config = json.loads(self.config_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RunFolderError(
                f"{self.config_path} is damaged: not valid JSON ({error}). Repair it by hand "
                f"(training wrote it with one key per line), or train into a new "
                f"{setting('run')} folder."
            ) from error
        if not isinstance(config, dict):
            raise RunFolderError(f"{self.config_path} is damaged: it holds a JSON "
                                 f"{type(config).__name__}, not an object of settings")
        from age_cgan.config import check_stored

        try:
            check_stored(config)
        except ValueError as error:
            raise RunFolderError(f"{self.config_path}: {raw_message(error)}. Fix the value in "
                                 f"the file, or train into a new {setting('run')} folder."
                                 ) from error
        return config

    def train_config(self, **changes) -> TrainConfig:
        """The stored config (checked) as a ``TrainConfig``, with ``changes``."""
        from age_cgan.config import TrainConfig

        return TrainConfig.from_stored(self.read_config(), **changes)

    def write_config(self, config: dict) -> None:
        write_json_atomic(self.config_path, config, "the run's settings")

    def age_bins(self) -> AgeBins:
        return AgeBins.parse(self.read_config()["age_bins"])

    # --- one writer at a time -----------------------------------------------------------------
    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    @contextlib.contextmanager
    def lock(self):
        """Hold the run folder for this process: an exclusive ``fcntl.flock`` on ``RUN/.lock``.

        The OS releases it when the process ends, however it ends (kill -9 included), so a
        stale lock never blocks a run. A second process is refused with RunLocked naming the
        holder's PID; the same process may nest (train -> stage -> FR). On taking the lock,
        temporary files left by dead processes (``.name.<pid>-<hex>.tmp.ext``) are removed.
        Creates the folder; a folder this call created is removed again if the block fails
        and left nothing but the lock.
        """
        key = str(self.path.resolve())
        if key in _HELD_LOCKS:
            _HELD_LOCKS[key][1] += 1
            try:
                yield self
            finally:
                _HELD_LOCKS[key][1] -= 1
            return
        created = not self.path.exists()
        with writing(self.lock_path, "the run folder's lock"):
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.lock_path, "a+", encoding="ascii")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunLocked(
                f"{self.path} is in use: process {holder} is training in it (it holds "
                f"{self.lock_path}). Wait for it to finish, stop it, or use another "
                f"{setting('run')}."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        _HELD_LOCKS[key] = [handle, 1]
        failed = True
        try:
            self.remove_dead_temporaries()
            yield self
            failed = False
        finally:
            del _HELD_LOCKS[key]
            if failed and created and [p.name for p in self.path.iterdir()] == [".lock"]:
                self.lock_path.unlink(missing_ok=True)
                self.path.rmdir()
            handle.close()  # releases the flock

    def holder(self) -> int | None:
        """The PID of another live process holding the lock, or None (nothing is written)."""
        if not self.lock_path.is_file() or str(self.path.resolve()) in _HELD_LOCKS:
            return None
        with open(self.lock_path, encoding="ascii") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = handle.read().strip()
                return int(text) if text.isdigit() else -1
        return None

    def remove_dead_temporaries(self) -> list[Path]:
        """Delete ``files.atomic_path`` temporaries in the run folder whose writer is dead.

        A process killed while writing a checkpoint leaves one (hundreds of MB); a live
        writer's (evaluate.py writing RUN/eval while training runs) is left alone.
        """
        removed = []
        for path in self.path.rglob(".*.tmp*"):
            match = _TEMP_NAME.match(path.name)
            if match and path.is_file() and not _pid_alive(int(match.group(1))):
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed

    # --- networks -----------------------------------------------------------------------------
    def has_model(self, network: str) -> bool:
        return self.model_path(network).is_file()

    def load_model(self, network: str) -> keras.Model:
        """Load ``models/<network>.keras`` safely; a clear error names the stage that makes it."""
        path = self.model_path(network)
        if not path.is_file():
            raise MissingModel(
                f"{path} is missing: the run folder {self.path} has no trained {network}. "
                f"Run {trained_by(network, run=str(self.path))} first.", network)
        return load_keras_file(path, network, "Train it again: "
                               f"{trained_by(network, run=str(self.path), overwrite=True)}.")

    def save_model(self, model: keras.Model, network: str) -> Path:
        """Write ``models/<network>.keras`` atomically (temp name + rename)."""
        path = self.model_path(network)
        with atomic_path(path, f"the trained {network}") as tmp:
            model.save(tmp)
        return path
