"""The model shipped inside the package: a run-like folder with checksums and a model card.

```
age_cgan/pretrained/lite/config.json         the run's settings (architecture, age bins, ...)
                                             and the per-photo method infer.py uses by default
age_cgan/pretrained/lite/models/*.keras      encoder, generator (Age-cGAN), age estimator and
                                             aging network, safe_mode
age_cgan/pretrained/lite/prototypes.npz      the age prototypes (the default method, prototype)
age_cgan/pretrained/lite/textures.npz        real older faces' skin detail the method adds at 40+
age_cgan/pretrained/lite/SHA256SUMS          one "sha256  relative/path" line per file
age_cgan/pretrained/lite/MODEL_CARD.md       data, licence, training command, wall time, figures
```

Every file listed in SHA256SUMS is checked before the networks are loaded, so a truncated
download or an edited file is a clear error naming it rather than a model that quietly ages
wrongly. ``tools/package_model.py`` writes such a folder from a trained run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from age_cgan.errors import AgeCganError, setting
from age_cgan.files import atomic_path, write_text

#: The shipped model's folder (a run folder plus SHA256SUMS and MODEL_CARD.md).
DEFAULT_MODEL = Path(__file__).resolve().parent / "lite"
CHECKSUMS = "SHA256SUMS"


class PretrainedError(AgeCganError, RuntimeError):
    """The shipped (or a given) model folder is missing, incomplete or damaged."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checksums(folder: Path) -> dict[str, str]:
    """relative path -> sha256 from ``folder/SHA256SUMS``."""
    listing = Path(folder) / CHECKSUMS
    if not listing.is_file():
        raise PretrainedError(f"{folder} is not a packaged model: it has no {CHECKSUMS} "
                              f"(a training run folder is passed as {setting('run')} instead)")
    sums = {}
    for number, line in enumerate(listing.read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, _, name = line.strip().partition("  ")
        if len(digest) != 64 or not name:
            raise PretrainedError(f"{listing}, line {number}: expected 'SHA256  PATH', "
                                  f"got {line!r}")
        sums[name] = digest
    return sums


def remedy(folder: Path, name: str, options: bool = False) -> str:
    """What restores the file ``name`` of a packaged model folder: the shipped model comes
    with the package; a user's own folder from the run it was packaged from, or, where the
    command takes the file from elsewhere (``options``: infer.py), that option (with the
    command that builds it)."""
    if Path(folder).resolve() == DEFAULT_MODEL.resolve():
        return "reinstall the package (`pip install --force-reinstall .`)"
    fix = f"copy it back from the run {folder} was packaged from (RUN/{name})"
    if name == "prototypes.npz" and not options:
        return (f"{fix}, or build it there with `python -m age_cgan.prototypes build DATA "
                f"{folder / name}` (DATA: 128 px faces) and remove its line from {CHECKSUMS}")
    if name == "prototypes.npz":
        return (f"{fix}, or build one with `python -m age_cgan.prototypes build DATA "
                f"FILE.npz` (DATA: 128 px faces) and pass {setting('prototypes', 'FILE.npz')}")
    if options and name.startswith("models/") and name.endswith(".keras"):
        return f"{fix}, or pass {setting(Path(name).stem, 'FILE.keras')}"
    return fix


def verify(folder: Path, given=None) -> Path:
    """Check every file of a packaged model against its SHA-256; returns the folder.
    ``given``: relative paths the command replaces with files of its own (not checked; a
    command that can replace files passes a set, empty or not, and its options are named).

    Raises PretrainedError naming the first missing or mismatching file and what to do."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PretrainedError(
            f"no model at {folder}: the package was installed without its weights "
            "(reinstall with `pip install .` from a full clone) or the path is wrong")
    for name, expected in read_checksums(folder).items():
        path = folder / name
        if name in (given or ()):
            continue
        if not path.is_file():
            raise PretrainedError(f"{path} is missing from the packaged model {folder}: "
                                  f"{remedy(folder, name, given is not None)}")
        actual = sha256(path)
        if actual != expected:
            raise PretrainedError(
                f"{path} is damaged or was changed: its SHA-256 is {actual}, {CHECKSUMS} "
                f"records {expected}. Restore it: {remedy(folder, name, given is not None)}")
    return folder


def verified_run(folder=None, given=None) -> Path:
    """The packaged model's folder (default: the shipped one), checked (but the files of
    ``given``, which the command replaces); loads as a run."""
    return verify(Path(folder) if folder is not None else DEFAULT_MODEL, given)


def shipped_defaults() -> dict:
    """The shipped model's default per-photo ``method`` and its ``strength``, read from its
    config.json without loading a network (what the help texts name); {} without one."""
    try:
        config = json.loads((DEFAULT_MODEL / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return {"method": config.get("default_method", "network"),
            "strength": float(config.get("default_strength", 1.0))}


def write_checksums(folder: Path, names) -> Path:
    """Write ``folder/SHA256SUMS`` for the given relative paths."""
    folder = Path(folder)
    lines = [f"{sha256(folder / name)}  {name}" for name in sorted(names)]
    write_text(folder / CHECKSUMS, "\n".join(lines) + "\n", "the packaged model's checksums")
    return folder / CHECKSUMS


#: The networks inference needs (the discriminators stay with the run); the first two always.
NETWORKS = ("encoder", "generator", "age_estimator", "aging_network", "face_recognizer")
REQUIRED = ("encoder", "generator")
#: Settings of a training invocation that mean nothing to a packaged model.
LOCAL_KEYS = ("run", "data_cache", "resume", "overwrite", "progress", "stage", "steps")


def package_run(run, out, method: str, strength: float = 1.0, leave_out=()) -> Path:
    """Write a packaged model folder ``out`` from the trained run folder ``run``: its networks
    (those of ``NETWORKS`` it has, but ``leave_out``), its settings without machine-local keys
    plus the default per-photo ``method`` and ``strength``, its recipe record when present, and
    SHA256SUMS over them; a network file of an earlier package not packaged now is removed.
    Returns ``out`` verified."""
    run, out = Path(run), Path(out)
    config = json.loads((run / "config.json").read_text())
    for key in LOCAL_KEYS:
        config.pop(key, None)
    if method == "prototype":  # its parts' strengths come from the run; the network keeps its
        config.setdefault("network_strength", config.get("default_strength", 1.0))
    config.update(default_method=method, default_strength=float(strength))
    write_text(out / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n",
               "the packaged model's settings")
    names = ["config.json"]
    for network in NETWORKS:
        source = run / "models" / f"{network}.keras"
        if network in leave_out or (network not in REQUIRED and not source.is_file()):
            continue  # e.g. a run without stage fr: the identity method will say so
        with atomic_path(out / "models" / f"{network}.keras", f"the packaged {network}") as tmp:
            shutil.copyfile(source, tmp)
        names.append(f"models/{network}.keras")
    for name, what in (("prototypes.npz", "the packaged age prototypes"),  # the recipe's
                       ("textures.npz", "the packaged texture bank")):  # last steps
        if (run / name).is_file():
            with atomic_path(out / name, what) as tmp:
                shutil.copyfile(run / name, tmp)
            names.append(name)
    for stale in (out / "models").glob("*.keras"):
        if f"models/{stale.name}" not in names:
            stale.unlink()
    if (run / "recipe.json").is_file():
        with atomic_path(out / "recipe.json", "the packaged recipe record") as tmp:
            shutil.copyfile(run / "recipe.json", tmp)
        names.append("recipe.json")
    write_checksums(out, names)
    return verify(out)
