"""Writing files so that a crash never leaves a half-written one in place."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path`` (same suffix); rename it over ``path`` on success.

    Nothing is left behind on failure, and readers see either the old file or the new one. The
    temporary name is unique, so two processes writing the same file (two jobs filling one data
    cache) never write into each other's temporary file: the last rename wins, whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)



def writable_problem(path, folder: bool = False) -> str | None:
    """Why ``path`` cannot be written, or None: checked before the work, never after it.

    ``path`` is a file to create or replace, or with ``folder=True`` a folder to write into.
    Missing folders count when the nearest existing one can be written (they are created).
    The test is a real one (a probe file made and removed), so it also holds for root and for
    read-only mounts, where permission bits say nothing.
    """
    path = Path(path)
    if path.is_dir() != folder and path.exists():
        return f"{path} is a {'file' if folder else 'folder'}, not a {'folder' if folder else 'file'}"
    if path.is_file():
        try:
            with open(path, "ab"):
                pass
        except OSError as error:
            return f"{path} cannot be written ({error.strerror})"
    nearest = path if folder and path.is_dir() else path.parent
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    if not nearest.is_dir():
        return f"{nearest} is a file, so {path} cannot be made"
    try:
        probe = nearest / f".write-probe.{os.getpid()}-{secrets.token_hex(4)}.tmp"
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as error:
        return f"cannot write in {nearest} ({error.strerror})"
    return None
