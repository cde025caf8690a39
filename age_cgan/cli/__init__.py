"""The command lines (train.py, infer.py, evaluate.py): thin over the package."""

from __future__ import annotations

import argparse

from age_cgan.helpformat import HelpFormatter

#: The help of ``--verbose``, which every console script takes (age_cgan/cli/quiet.py).
VERBOSE_HELP = ("keep the backends' own log lines (TensorFlow's C++ start-up notices); also "
                "AGE_CGAN_VERBOSE=1")


def add_verbose(parser: argparse.ArgumentParser) -> None:
    """``--verbose`` as the console scripts take it (``quiet.run`` acts on it before parsing)."""
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)


__all__ = ["HelpFormatter", "VERBOSE_HELP", "add_verbose"]
