"""The decoded-face cache: one uncompressed .npz per (source, settings), written atomically.

The file name carries a hash of the resolved source path, the source's signature (the names,
sizes and times of its image files, and of its metadata file), the image size, the age bins, the crop
settings and FORMAT_VERSION; any change there means a new file, never a stale one. The file
holds only plain arrays (no pickle): it is read with ``np.load(allow_pickle=False)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np

from age_cgan.files import WriteFailed, atomic_path

#: Bump when the stored arrays or their meaning change.
FORMAT_VERSION = 1

ARRAYS = ("images", "ages", "categories", "identities", "names")


def default_cache_dir() -> Path:
    """``$AGE_CGAN_CACHE`` if set, else ``~/.cache/age_cgan``."""
    return Path(os.environ.get("AGE_CGAN_CACHE") or Path.home() / ".cache" / "age_cgan")


def cache_path(source, image_size: int, bins_spec: str, settings: dict,
               cache_dir: str | os.PathLike | None = None, listing=None) -> Path:
    """Where the decoded arrays of ``source`` (a readers.Source) with these settings live;
    ``listing`` is the source's (read when not given), whose image files the key sees."""
    key = {
        "format": FORMAT_VERSION,
        "kind": source.kind,
        "source": str(source.path),
        "signature": source.signature(listing),
        "image_size": int(image_size),
        "bins": bins_spec,
        "settings": settings,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{source.path.parent.name}_{source.path.name}")
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder.expanduser() / f"{source.kind}-{label}-{image_size}px-{digest}.npz"


def save(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> bool:
    """Write arrays + JSON meta to ``path`` atomically (``files.atomic_path``).

    Returns False (with one warning) when the cache cannot be written (a full disk, a
    read-only or forbidden folder, a file where the folder should be): the data is still
    usable, it is only decoded again next time.
    """
    for name, array in arrays.items():
        if array.dtype == object:
            raise TypeError(f"cache array {name!r} is an object array")
    try:
        with atomic_path(path, "the face cache") as temp, open(temp, "wb") as handle:
            np.savez(handle, meta=np.array(json.dumps(meta)), **arrays)
        return True
    except OSError as error:
        why = (f"{error.reason} ({error.strerror})" if isinstance(error, WriteFailed)
               else str(error))
        warnings.warn(f"could not write the face cache {path}: {why}. The faces are used "
                      "without it and decoded again next time; point AGE_CGAN_CACHE (or the "
                      "data_cache setting) at a writable folder to keep them", stacklevel=3)
        return False


def load(path: Path) -> tuple[dict[str, np.ndarray], dict] | None:
    """Arrays and meta from ``path``; None when absent, unreadable or of another format."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            meta = json.loads(str(stored["meta"]))
            if meta.get("format") != FORMAT_VERSION:
                return None
            arrays = {name: stored[name] for name in ARRAYS}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as error:
        warnings.warn(f"ignoring unreadable face cache {path}: {error}", stacklevel=3)
        return None
    return arrays, meta
