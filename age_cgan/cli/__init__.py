"""The command lines (train.py, infer.py, evaluate.py): thin over the package."""

from __future__ import annotations

import argparse

#: The help of ``--verbose``, which every console script takes (age_cgan/cli/quiet.py).
VERBOSE_HELP = ("keep the backends' own log lines (TensorFlow's C++ start-up notices); also "
                "AGE_CGAN_VERBOSE=1")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" to an option's help unless the help already says its default, or
    there is none to show: no value (None, False, SUPPRESS; argparse's own formatter prints
    "(default: None)"), or a switch (a ``--no-X`` switch's default True says nothing a user can
    act on: its help says what it turns off)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default:" in text or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS
                or action.nargs == 0):  # a switch; (0 is a default to show)
            return text
        return super()._get_help_string(action)


def add_verbose(parser: argparse.ArgumentParser) -> None:
    """``--verbose`` as the console scripts take it (``quiet.run`` acts on it before parsing)."""
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
