"""How the command lines word the library's errors: each setting it names as its flag.

The library's messages name settings and commands by marker (``age_cgan.errors``); here a
setting ``batch_size`` becomes ``--batch-size``, ``resume=True`` the switch ``--resume``,
``progress=False`` ``--no-progress``, and a command the line to type
(``python train.py --stage 1 --run logs/r``).
"""

from __future__ import annotations

from age_cgan.errors import AgeCganError

#: Settings whose flag is not ``--`` + the name with dashes, as (name, value) -> flag.
SPECIAL = {("progress", False): "--no-progress"}


def flag(name: str, value=None) -> str:
    """The flag that sets ``name`` to ``value`` (bare for a switch or no value)."""
    if (name, value) in SPECIAL:
        return SPECIAL[name, value]
    option = "--" + name.replace("_", "-")
    if value is False:  # a setting on by default, turned off
        return "--no-" + option[2:]
    return option if value is None or value is True else f"{option} {value}"


def flag_words(part: dict) -> str:
    if "setting" in part:
        return flag(part["setting"], part["value"])
    settings, tool = dict(part["settings"]), part.get("command", "train")
    if "maker" in part:  # the stage that trains that network, from the stage declarations
        from age_cgan.training.graph import maker_of

        settings = {"stage": maker_of(part["maker"]), **settings}
    options = [flag(name, value) for name, value in settings.items()]
    return "`" + " ".join(["python", f"{tool}.py", *options]) + "`"


def cli_message(error: BaseException) -> str:
    """``error``'s message as a command line's user reads it."""
    return error.words(flag_words) if isinstance(error, AgeCganError) else str(error)


__all__ = ["cli_message", "flag", "flag_words"]
