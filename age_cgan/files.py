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
