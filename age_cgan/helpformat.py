"""The help formatter of every command line (``age_cgan.cli``, ``python -m age_cgan.data``,
tools/ and benchmarks/): argparse only, so that any layer's command can use it."""

from __future__ import annotations

import argparse


def escape_percent(text: str) -> str:
    """``text`` for an argparse help string, which argparse %-formats with the option's fields:
    a literal "%" ("40% slower") would otherwise print the option's dictionary."""
    return text.replace("%", "%%")


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


class DocstringHelpFormatter(argparse.RawDescriptionHelpFormatter, HelpFormatter):
    """``HelpFormatter`` with the description printed as written (a script's plain-text
    docstring with its example commands: tools/, benchmarks/)."""
