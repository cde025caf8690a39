"""Which errors mean "out of memory", under every backend: the one place that knows.

Python's ``MemoryError`` (numpy cannot allocate a batch), TensorFlow's
``ResourceExhaustedError`` ("OOM when allocating tensor ..."), and an XLA allocation failure
(JAX's ``XlaRuntimeError`` / ``JaxRuntimeError``, TensorFlow's ``InternalError`` with
``RESOURCE_EXHAUSTED`` or "Out of memory while trying to allocate"). The classes are matched by
name, so nothing here imports TensorFlow or JAX. A full disk reported by TensorFlow's file layer
is a ``ResourceExhaustedError`` too; its wording ("No space left on device") tells it apart.
"""

from __future__ import annotations

import errno
import os
import re

from age_cgan.files import error_chain

#: Backend errors that report an allocation failure only in their message.
_RUNTIME_ERRORS = {"XlaRuntimeError", "JaxRuntimeError", "InternalError", "UnknownError"}
_ALLOCATION = re.compile(r"RESOURCE_EXHAUSTED|out of memory|OOM when allocating|"
                         r"failed to allocate|unable to allocate|allocation failed", re.I)
_DISK = tuple(os.strerror(code) for code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG))


def out_of_memory(error: BaseException) -> BaseException | None:
    """The allocation failure behind ``error`` (itself or a cause), or None."""
    for link in error_chain(error):
        names = {kind.__name__ for kind in type(link).__mro__}
        text = str(link)
        if any(disk in text for disk in _DISK):
            return None
        if isinstance(link, MemoryError) or "ResourceExhaustedError" in names:
            return link
        if names & _RUNTIME_ERRORS and _ALLOCATION.search(text):
            return link
    return None


def describe(error: BaseException, limit: int = 160) -> str:
    """One short line for an allocation failure: its type and its message's first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else "no message"
    if len(text) > limit:
        text = text[:limit - 3].rstrip() + "..."
    return f"{type(error).__name__}: {text}"


__all__ = ["describe", "out_of_memory"]
