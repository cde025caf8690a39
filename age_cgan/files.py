"""Writing files so that a crash never leaves a half-written one in place, and a write the
machine refuses (a full disk, a quota, a file-size limit, a read-only or forbidden folder) is
one clear ``WriteFailed``: the path, what was being written, what is kept and what to do.

Every writer of the project goes through ``atomic_path`` (a whole file, renamed into place)
or, for a file that grows (TensorBoard events, a JSON-lines log), ``writing``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path

from age_cgan.errors import AgeCganError

#: The write failures a user can act on: errno -> (what happened, what to do about it).
WRITE_ERRORS = {
    errno.ENOSPC: ("the disk is full", "free space on that disk"),
    errno.EDQUOT: ("the disk quota is used up", "free space within your quota"),
    errno.EFBIG: ("the file would exceed this process's file-size limit",
                  "raise the limit (`ulimit -f unlimited`)"),
    errno.EROFS: ("the file system is read-only", "make it writable (remount it)"),
    errno.EACCES: ("permission is denied", "make the folder writable for this user"),
    errno.EPERM: ("the operation is not permitted", "make the folder writable for this user"),
    errno.ENOTDIR: ("a file is where a folder is expected", "move that file out of the way"),
}


class WriteFailed(AgeCganError, OSError):
    """The machine refused a write (``WRITE_ERRORS``). An OSError too, so callers that skip
    an optional file on any OSError (the face cache) still do.

    ``kept`` says what is intact ("the checkpoint of step 1200 is intact") and ``then`` what to
    run once the cause is fixed ("resume with --resume"); a caller that knows better replaces
    them with ``but``.
    """

    def __init__(self, path, what: str | None, code: int, kept: str | None = None,
                 then: str | None = None):
        self.path, self.what, self.code = Path(path), what, code
        self.reason, self.remedy = WRITE_ERRORS[code]
        self.kept = kept or "nothing else was changed"
        self.then = then or "run the command again"
        written = f"{what} ({self.path})" if what else str(self.path)
        super().__init__(f"cannot write {written}: {self.reason} "
                         f"({os.strerror(code)}). {self.kept[:1].upper()}{self.kept[1:]}; "
                         f"{self.remedy} and {self.then}.")
        self.errno, self.strerror, self.filename = code, os.strerror(code), str(self.path)

    def but(self, kept: str | None = None, then: str | None = None) -> WriteFailed:
        """The same failure with another account of what is kept and what to run next."""
        return WriteFailed(self.path, self.what, self.code, kept or self.kept,
                           then or self.then)


def error_chain(error: BaseException):
    """``error`` and its causes (``__cause__`` / ``__context__``), each once."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def write_error_code(error: BaseException) -> int | None:
    """The ``WRITE_ERRORS`` errno behind ``error`` (its causes included), or None.

    An OSError carries it; a library that wraps the OS error in its own (TensorFlow's file
    layer, h5py) keeps its wording (``No space left on device``), which is looked for too.
    """
    for link in error_chain(error):
        if isinstance(link, OSError) and link.errno in WRITE_ERRORS:
            return link.errno
    text = " ".join(str(link) for link in error_chain(error))
    for code in WRITE_ERRORS:
        if code not in (errno.EPERM, errno.ENOTDIR) and os.strerror(code) in text:
            return code
    return None


@contextlib.contextmanager
def writing(path, what: str | None, kept: str | None = None, then: str | None = None):
    """Turn a refused write inside the block into ``WriteFailed(path, what, ...)``; any other
    error passes unchanged."""
    try:
        yield
    except WriteFailed:
        raise
    except Exception as error:
        code = write_error_code(error)
        if code is None:
            raise
        raise WriteFailed(path, what, code, kept, then) from error


@contextlib.contextmanager
def atomic_path(path, what: str | None = None):
    """Yield a temporary path beside ``path`` (same suffix); rename it over ``path`` on success.

    Nothing is left behind on failure, and readers see either the old file or the new one. The
    temporary name is unique, so two processes writing the same file (two jobs filling one data
    cache) never write into each other's temporary file: the last rename wins, whole.

    A refused write is ``WriteFailed`` naming ``path`` and ``what`` ("the checkpoint of step
    1200"; default: the path alone), and saying that the earlier file is unchanged.
    """
    path = Path(path)
    kept = (f"the earlier {path.name} there is unchanged" if path.is_file()
            else "nothing was written there")
    with writing(path, what, kept):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # a file where the folder should be
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path.parent)) from None
        tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            yield tmp
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


def write_text(path, text: str, what: str | None = None) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (``atomic_path``)."""
    with atomic_path(path, what) as tmp:
        tmp.write_text(text, encoding="utf-8")


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
