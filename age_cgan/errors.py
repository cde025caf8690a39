"""Typed errors whose messages name settings, not command-line flags.

The library knows its settings by their Python names (``TrainConfig.resume``, ``batch_size``);
only the command lines know them as flags (``--resume``, ``--batch-size``). So a message that
tells the user what to change names the setting with ``setting(...)`` and the command to run
with ``command(...)`` (or ``trained_by(network)``: the stage that trains it). They are markers inside the message text; ``str(error)`` words them for a
Python caller (``resume=True``, ``train(TrainConfig(stage='1', run='logs/r'))``) and the command
lines word them as flags through ``error.words(...)`` (see ``age_cgan.cli.words``).

Every error a user can cause derives from ``AgeCganError`` and, where it was one before, from
the built-in type callers already catch (``ValueError``, ``RuntimeError``).
"""

from __future__ import annotations

import json
import re
from typing import Callable

_MARK = "\x1f"  # never in a path or a number; JSON escapes it inside values
_MARKER = re.compile(f"{_MARK}(.*?){_MARK}")


def setting(name: str, value=None) -> str:
    """A marker naming the setting ``name`` (a ``TrainConfig`` field or another keyword), with
    the value to give it when the message suggests one (True for a switch)."""
    return _MARK + json.dumps({"setting": name, "value": value}) + _MARK


def command(tool: str = "train", **settings) -> str:
    """A marker naming a run of ``tool`` (train, infer, evaluate) with these settings."""
    return _MARK + json.dumps({"command": tool, "settings": settings}) + _MARK


def trained_by(network: str, **settings) -> str:
    """A marker naming the training run of the stage that trains ``network`` (which stage
    that is, the training package's stage declarations tell: ``training.maker_of``)."""
    return _MARK + json.dumps({"maker": network, "settings": settings}) + _MARK


def python_words(part: dict) -> str:
    """A marker as a Python caller writes it."""
    if "setting" in part:
        name, value = part["setting"], part["value"]
        return name if value is None else f"{name}={value!r}"
    settings = ", ".join(f"{k}={v!r}" for k, v in part["settings"].items())
    if "maker" in part:
        stage = f"stage=age_cgan.training.maker_of({part['maker']!r})"
        return f"age_cgan.training.train(TrainConfig({', '.join([stage, settings])}))"
    if part["command"] == "train":
        return f"age_cgan.training.train(TrainConfig({settings}))"
    return f"{part['command']}({settings})"


def render(message: str, word: Callable[[dict], str] = python_words) -> str:
    """``message`` with each marker replaced by ``word(marker)``."""
    return _MARKER.sub(lambda match: word(json.loads(match.group(1))), message)


def raw_message(error: BaseException) -> str:
    """An error's message with its markers kept (to build another error's message on it)."""
    return error.message if isinstance(error, AgeCganError) else str(error)


class AgeCganError(Exception):
    """An error a user can act on; its message may name settings and commands (see above)."""

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return render(self.message)

    def words(self, word: Callable[[dict], str]) -> str:
        """The message with settings and commands worded by ``word`` (e.g. as flags)."""
        return render(self.message, word)


class SettingError(AgeCganError, ValueError):
    """A setting's value is out of range or of the wrong kind (``TrainConfig``, devices)."""


__all__ = ["AgeCganError", "SettingError", "command", "python_words", "raw_message", "render",
           "setting", "trained_by"]
