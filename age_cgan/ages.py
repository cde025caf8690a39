"""Age categories: the paper's six bins by default, or custom ones such as "20-30,40-50".

A category is an inclusive range of whole years. The paper (Antipov et al. 2017, section 3)
uses 0-18, 19-29, 30-39, 40-49, 50-59 and 60+; custom bins may leave gaps, and an age that falls
in no bin (or is invalid) maps to -1 so that callers drop it instead of re-labelling it (the book
code gives an age <= 0 the previous image's category).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from age_cgan.errors import SettingError, setting

#: The paper's categories (Antipov, Baccouche, Dugelay 2017).
DEFAULT_SPEC = "0-18,19-29,30-39,40-49,50-59,60+"

#: Ages above this are treated as data errors everywhere in the project.
MAX_AGE = 100


@dataclasses.dataclass(frozen=True)
class AgeBins:
    """Inclusive age ranges ``(low, high)``; ``high`` is ``math.inf`` for an open bin like 60+."""

    ranges: tuple[tuple[int, float], ...]

    def __post_init__(self):
        if not self.ranges:
            raise ValueError("at least one age category is needed")
        previous_high = -1
        for low, high in self.ranges:
            if low < 0 or high < low:
                raise ValueError(f"invalid age range {low}-{high}")
            if low <= previous_high:
                raise ValueError(
                    f"age ranges must be increasing and must not overlap: {self.spec}"
                )
            previous_high = high

    @classmethod
    def parse(cls, spec: str | "AgeBins" | None = None) -> "AgeBins":
        """Parse ``"0-18,19-29,60+"``-style text (``None`` = the paper's six categories)."""
        if isinstance(spec, AgeBins):
            return spec
        spec = DEFAULT_SPEC if spec is None else spec
        ranges = []
        for part in spec.replace(" ", "").split(","):
            if not part:
                continue
            try:
                if part.endswith("+"):
                    ranges.append((int(part[:-1]), math.inf))
                else:
                    low, high = part.split("-")
                    ranges.append((int(low), int(high)))
            except ValueError:
                raise ValueError(
                    f"cannot read age range {part!r} in {spec!r}: "
                    "write ranges as LOW-HIGH or LOW+, separated by commas, e.g. '20-30,40-50'"
                ) from None
        return cls(tuple(ranges))

    @property
    def num_ages(self) -> int:
        return len(self.ranges)

    @property
    def labels(self) -> list[str]:
        return [f"{lo}+" if math.isinf(hi) else f"{lo}-{hi}" for lo, hi in self.ranges]

    @property
    def spec(self) -> str:
        return ",".join(self.labels)

    def centres(self) -> np.ndarray:
        """Centre age of each category (an open bin ends at MAX_AGE), for MAE to the category."""
        return np.array(
            [(lo + (MAX_AGE if math.isinf(hi) else hi)) / 2 for lo, hi in self.ranges],
            dtype=np.float32,
        )

    def category(self, ages) -> np.ndarray:
        """Map ages (years, any array shape) to category indices; -1 when in no category.

        Fractional ages belong to the bin of their whole year (18.7 is 18). Negative, NaN and
        ages above MAX_AGE are -1.
        """
        ages = np.asarray(ages, dtype=np.float64)
        years = np.floor(np.nan_to_num(ages, nan=-1.0))
        out = np.full(ages.shape, -1, dtype=np.int64)
        valid = (years >= 0) & (years <= MAX_AGE)
        for index, (low, high) in enumerate(self.ranges):
            out[valid & (years >= low) & (years <= high)] = index
        return out

    def shown_years(self, years: float, category: int) -> int | None:
        """``years`` as a person reads them (whole years, rounded), or None where those fall
        outside ``category``: one statement, never "19-29 ... about 30 years"."""
        shown = int(round(float(years)))
        return shown if int(self.category(shown)) == category else None

    def one_hot(self, categories) -> np.ndarray:
        """One-hot float32 (..., num_ages) of category indices; -1 is rejected."""
        categories = np.asarray(categories, dtype=np.int64)
        if np.any((categories < 0) | (categories >= self.num_ages)):
            raise ValueError(f"category out of range 0..{self.num_ages - 1}: {categories}")
        return np.eye(self.num_ages, dtype=np.float32)[categories]


PAPER_BINS = AgeBins.parse(DEFAULT_SPEC)


def parse_ages(text: str, bins: AgeBins) -> list[int]:
    """'all' | '19-29,60+' | '25,70' -> sorted category indices of ``bins``; a SettingError
    (a ValueError) on the setting ``ages`` names the choices (infer.py's --ages, the page)."""
    if text.strip().lower() == "all":
        return list(range(bins.num_ages))
    chosen = set()
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part in bins.labels:
            chosen.add(bins.labels.index(part))
            continue
        try:
            category = int(bins.category(float(part)))
        except ValueError:
            category = -1
        if category < 0:
            raise SettingError(f"{setting('ages')}: {part!r} is neither a category "
                               f"({', '.join(bins.labels)}) nor an age in one")
        chosen.add(category)
    if not chosen:
        raise SettingError(f"{setting('ages')}: no category given")
    return sorted(chosen)
