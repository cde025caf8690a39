"""Loading a model folder's parts for ``AgingModels``: its config, networks and age prototypes."""

from __future__ import annotations

from pathlib import Path

import keras

from age_cgan.ages import AgeBins
from age_cgan.errors import setting, trained_by
from age_cgan.prototypes import PrototypeFileError, Prototypes
from age_cgan.runs import RunFolder, RunFolderError, load_keras_file

REQUIRED_CONFIG = ("image_size", "age_bins")
#: The age prototypes' file in a model folder (``python -m age_cgan.prototypes build``).
PROTOTYPES_FILE = "prototypes.npz"


def run_config(folder: RunFolder, given: dict) -> dict:
    """The run's config, after checking that it and the networks not ``given`` are there (the
    encoder and generator unless the folder has an aging network)."""
    if not folder.path.is_dir():
        raise RunFolderError(
            f"run folder {folder.path} does not exist; pass {setting('run')} with the folder "
            f"training wrote (e.g. logs/run), or {setting('encoder')} and "
            f"{setting('generator')} files"
        )
    config = folder.read_config()
    missing = [key for key in REQUIRED_CONFIG if key not in config]
    if missing:
        raise RunFolderError(
            f"{folder.config_path} is incomplete: no {', '.join(missing)}. "
            "Was it written by training? Train again into a fresh run folder."
        )
    if given.get("aging_network") is not None or folder.has_model("aging_network"):
        return config  # the aging network needs no encoder or generator
    needed = [name for name in ("encoder", "generator")
              if given[name] is None and not folder.has_model(name)]
    if needed:
        raise RunFolderError(
            f"run folder {folder.path} is incomplete: "
            + ", ".join(str(folder.model_path(name)) for name in needed)
            + f" missing. Finish training first: {trained_by(needed[0], run=str(folder.path))}"
            f" (or {setting('stage', 'age-cgan')})."
        )
    return config


def load_network(folder: RunFolder | None, network: str, path=None) -> keras.Model | None:
    """The network from ``path``, else the folder's (None when the folder lacks it)."""
    if path is None:
        if folder is None or not folder.has_model(network):
            return None
        return folder.load_model(network)
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"{path} ({network}) does not exist")
    return load_keras_file(path, network, f"Give another {setting(network)} file.")


def load_prototypes(folder: RunFolder | None, path, bins: AgeBins):
    """(the age prototypes or None, notes): an explicit ``path`` must load
    (PrototypeFileError names it); the folder's own file, when damaged or built for other age
    categories, is left out with a one-line note."""
    if path is not None:
        return Prototypes.load(path, bins.spec), []
    if folder is None or not (folder.path / PROTOTYPES_FILE).is_file():
        return None, []
    try:
        return Prototypes.load(folder.path / PROTOTYPES_FILE, bins.spec), []
    except PrototypeFileError as error:
        return None, [f"{error}: the prototype method is unavailable"]

