"""``python train.py``: train the Age-cGAN stages in a run folder (thin over age_cgan.training).

Every ``TrainConfig`` field is an option, named after it (``batch_size`` -> ``--batch-size``),
typed by its annotation and helped by its own help text: the settings have one source.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing

from age_cgan.cli import HelpFormatter, add_verbose
from age_cgan.cli.words import cli_message, flag, flag_words
from age_cgan.config import TrainConfig
from age_cgan.errors import AgeCganError, render
from age_cgan.helpformat import escape_percent

DESCRIPTION = (
    "Train the networks of an aging model in a run folder: one stage or a group of them "
    "(--stage, listed below), or every stage with the shipped model's settings (--recipe "
    "lite; with --stage, only those stages of it). Every planned stage is checked before the "
    "first one trains; --dry-run prints the plan. The backend is KERAS_BACKEND (tensorflow by "
    "default, or jax). Watch it with `tensorboard --logdir logs`.")


def _devices(text: str):
    """--devices: "all" or a positive count (an int, so config.json records a number)."""
    if text.strip().lower() == "all":
        return "all"
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number or all, got {text!r}")
    return int(text)


def _kinds(hint) -> tuple:
    """The non-None types of an annotation (``int | None`` -> (int,))."""
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return tuple(kind for kind in kinds if kind is not type(None))


def setting_help(field: dataclasses.Field) -> str:
    """A field's help as this command line says it (the settings it names, as flags)."""
    return render(field.metadata["help"], flag_words)


def add_setting(target, field: dataclasses.Field, hint) -> None:
    """One option for a TrainConfig field: a switch for a bool, else a typed value."""
    meta, name = field.metadata, field.name
    kinds = _kinds(hint)
    options = {"dest": name, "default": field.default, "help": escape_percent(setting_help(field))}
    if name == "stage":  # None: not given, so that --recipe runs all of its stages
        options.update(default=None, help=options["help"] + f" (default: {field.default}; "
                       "with --recipe: every stage of the recipe)")
    if kinds == (bool,) and field.default is True:  # on by default: --no-NAME turns it off
        options["help"] += " (on by default: this flag turns it off)"
        target.add_argument(flag(name, False), action="store_false", **options)
        return
    if kinds == (bool,) and field.default is False:
        target.add_argument(flag(name), action="store_true", **options)
        return
    if kinds == (bool,):  # None = decided by the stage: say yes or no
        target.add_argument(flag(name), action=argparse.BooleanOptionalAction, **options)
        return
    kind = _devices if name == "devices" else kinds[0] if len(kinds) == 1 else str
    if "choices" in meta:
        options["choices"] = meta["choices"]
    target.add_argument(flag(name), type=kind, **options)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train.py", description=DESCRIPTION,
                                formatter_class=HelpFormatter)
    p.add_argument("--recipe", choices=["lite"],
                   help="train with a fixed recipe's settings: lite = the shipped CPU model "
                   "(--arch lite, batch 64, each stage's steps; stages 1, 2, fr, 3, age, aging: "
                   "about two hours on 2 CPU cores; with --stage network only age and aging, "
                   "about an hour). With --dry-run it prints the plan and the expected time; "
                   "cut off, continue it with the same command and --resume")
    p.add_argument("--dry-run", action="store_true",
                   help="check the run folder and the data, print each stage's steps, images "
                   "and epochs, and stop: nothing is trained or written to the run folder")
    hints = typing.get_type_hints(TrainConfig)
    groups = {}
    for field in dataclasses.fields(TrainConfig):
        group = field.metadata.get("group")
        if group and group not in groups:
            groups[group] = p.add_mutually_exclusive_group()
        add_setting(groups[group] if group else p, field, hints[field.name])
    add_verbose(p)
    return p


def config_from_args(args) -> TrainConfig:
    values = {k: v for k, v in vars(args).items()
              if k in TrainConfig.__dataclass_fields__ and not (k == "stage" and v is None)}
    return TrainConfig(**values)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as error:
        parser().error(cli_message(error))
    from age_cgan.training import TrainingInterrupted, format_plan, plan, train

    try:
        if args.recipe:
            from age_cgan.config import stages_of
            from age_cgan.training.recipe import format_recipe_plan, run_recipe

            only = None if args.stage is None else stages_of(args.stage)
            if args.dry_run:
                print(format_recipe_plan(args.recipe, config, flag_words, only))
            else:
                record = run_recipe(args.recipe, config, only)
                print(f"recipe {args.recipe} done in {record['total_wall_seconds'] / 60:.1f} "
                      f"minutes (wall time per stage in {config.run}/recipe.json)")
        elif args.dry_run:
            print(format_plan(config, plan(config), flag_words))
        else:
            train(config)
    except TrainingInterrupted as stop:
        print(f"train.py: {stop}; continue with the same command and --resume",
              file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("train.py: interrupted; continue with --resume (the last checkpoint is kept)",
              file=sys.stderr)
        return 130
    except (AgeCganError, FileNotFoundError, ValueError) as error:
        print(f"train.py: error: {cli_message(error)}", file=sys.stderr)
        return 1
    return 0


def console() -> None:
    """The console script and the top-level script: backend log noise filtered unless
    --verbose (see age_cgan/cli/quiet.py)."""
    from age_cgan.cli.quiet import run

    run(main)


if __name__ == "__main__":
    console()
