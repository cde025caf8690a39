"""What the commands and the page say about the per-photo methods, the strength and the
person's own age: one wording, built from ``age_cgan.aging.methods`` and the shipped model's
config.json, with no Keras import (``--help`` stays fast). The grid's own-age header is
``aging.grid.own_age_label`` (the page draws the grid too)."""

from __future__ import annotations

from age_cgan.aging.grid import own_age_label


def method_help(default: str, methods=None, sep: str = " = ") -> str:
    """Each per-photo method of ``methods`` (default: every one ``age_cgan.aging.METHODS``
    lists) in a sentence, ``default`` first: infer.py's --method and the page's hint."""
    from age_cgan.aging.methods import METHOD_HELP, METHOD_TITLES, METHODS

    methods = list(METHODS if methods is None else methods)
    order = [default, *(m for m in methods if m != default)] if default in methods else methods
    return "; ".join(f"{m}{sep}{METHOD_HELP.get(m, METHOD_TITLES[m])}" for m in order)


def strength_help() -> str:
    """--strength's help, with the range and the shipped model's own strength (no Keras)."""
    from age_cgan.aging.methods import DEFAULT_STRENGTH, PHOTO_METHODS, STRENGTH_RANGE
    from age_cgan.pretrained import shipped_defaults

    shipped = shipped_defaults()
    own = (f"{shipped['strength']:g} for the shipped model's {shipped['method']} method, "
           if shipped else "")
    return (f"{' / '.join(PHOTO_METHODS)}: how much of the change is made to the photo, from "
            f"{STRENGTH_RANGE[0]:g} to {STRENGTH_RANGE[1]:g} (default: the model's own: {own}"
            f"{DEFAULT_STRENGTH:g} for a training run)")


def own_age_line(aged) -> str:
    """The age estimator's one guess of the person's own age: its category, how sure it is,
    and its years only where they fall in that category (``AgingModels.age``)."""
    years = "" if aged.source_years is None else f", about {aged.source_years:.0f} years"
    return (f"own age guessed by the age estimator: {aged.source_label} "
            f"({aged.source_confidence:.0%} sure{years}; --source-age YEARS to give it)")


__all__ = ["method_help", "own_age_label", "own_age_line", "strength_help"]
