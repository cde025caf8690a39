"""Keep the backends' start-up noise off a user's terminal.

TensorFlow 2.21 logs through absl from C++ before ``TF_CPP_MIN_LOG_LEVEL`` is read ("WARNING:
All log messages before absl::InitializeLog() is called are written to STDERR", oneDNN and
CUDA-stub notices at import, "remapper failed" while tracing), straight to file descriptor 2,
where no Python setting reaches. ``quiet_backend_logs`` therefore gives Python's own
``sys.stderr`` a private copy of the terminal and routes descriptor 2 through a thread that
drops only lines in absl's format (``I0000 00:00:... file.cc:123] ...``, fatal ones excepted) and
that preamble; everything else reaches the terminal as before. ``AGE_CGAN_VERBOSE=1`` (or a
command's ``--verbose``) keeps every line. Only the command-line entry points call it, never the
library (tests capture stderr themselves).
"""

from __future__ import annotations

import os
import re
import sys
import threading

VERBOSE_VARIABLE = "AGE_CGAN_VERBOSE"
#: absl / glog lines of severity I, W or E, and absl's preamble; F (fatal) lines are kept.
NOISE = re.compile(rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
                   rb"|[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w./-]+:\d+\] )")


def is_noise(line: bytes) -> bool:
    return NOISE.match(line) is not None


def _pump(read_fd: int, write_fd: int) -> None:
    with os.fdopen(read_fd, "rb", buffering=0) as source:
        pending = b""
        while chunk := source.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not is_noise(line))
            if kept:
                os.write(write_fd, kept)
        if pending and not is_noise(pending):
            os.write(write_fd, pending)


def quiet_backend_logs(verbose: bool = False) -> bool:
    """Filter the backends' C++ log lines out of standard error for the rest of the process
    (call before importing Keras); returns whether the filter was installed."""
    if verbose or os.environ.get(VERBOSE_VARIABLE, "") not in ("", "0"):
        return False
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # what TensorFlow still honours
    sys.stderr.flush()
    terminal = os.dup(2)
    sys.stderr = open(terminal, "w", buffering=1, encoding=sys.stderr.encoding or "utf-8",
                      errors="backslashreplace", closefd=False)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    threading.Thread(target=_pump, args=(read_fd, terminal), daemon=True,
                     name="stderr-filter").start()
    return True


def run(main) -> None:
    """The console-script wrapper: quiet the backends unless --verbose, then exit with main()."""
    verbose = "--verbose" in sys.argv[1:]
    if verbose:
        sys.argv.remove("--verbose")
    quiet_backend_logs(verbose)
    raise SystemExit(main())
