"""The command lines (train.py, infer.py, evaluate.py): thin over the package."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" to an option's help unless the help already says its default, or
    there is none to show (argparse's own formatter prints "(default: ...) (default: None)")."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default:" in text or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS):  # (0 is a default to show)
            return text
        return super()._get_help_string(action)
