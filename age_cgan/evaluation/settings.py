"""What an evaluation measures (``EvalSettings``) and the figures it is set against: the
paper's, the shared data's references and the project's goals."""

from __future__ import annotations

import dataclasses
import json

from age_cgan.errors import AgeCganError, SettingError, setting

#: The paper's Table 1 (OpenFace "same person" rates between a test face and its reconstruction).
PAPER_IDENTITY = {"z0": 0.53, "z*_pixel": 0.60, "z*_IP": 0.829}
#: The paper: generated faces' age accuracy was 17% lower (relative) than real faces'.
PAPER_AGE_GAP = 0.17
#: Reference figures measured on the shared data (shared/data/README.md).
REFERENCE = {
    "age_real_utkface64": {"accuracy": 0.540, "mae_years": 7.1},
    "dlib_cacdvs64": {"same_accepted": 0.935, "different_accepted": 0.003},
}
#: Latent methods in the paper's order, and the aging.py mode each uses.
METHODS = {"z0": "none", "z*_pixel": "pixel", "z*_IP": "identity"}
#: The project's goals (issue 6).
GOALS = {"z*_IP_same_person": 0.90, "age_gap": 0.10}


class EvaluationError(AgeCganError, ValueError):
    """An evaluation input the user can fix: a file that is not a faces file, a pairs file
    without pairs, data without a test split, a check this phase cannot do."""


class EvaluationFileMissing(AgeCganError, FileNotFoundError):
    """A file or folder an evaluation reads is not there; the message says how to make or
    pass it."""


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """What ``evaluate_run`` measures and how much of it."""

    per_age: int = 100  # generated faces per age category for the age accuracy and statistics
    limit: int | None = None  # test faces at most (None: the whole test split)
    methods: tuple[str, ...] = tuple(METHODS)  # latent methods for the identity table
    # per-photo methods for the aging section, by age_cgan.aging.METHODS name (None: all of
    # them; (): no aging section); checked where the networks are (that list needs Keras)
    aging_methods: tuple[str, ...] | None = None
    pixel_steps: int | None = None  # Adam steps for z*_pixel (None: aging.DEFAULT_STEPS)
    identity_steps: int | None = None  # Adam steps for z*_IP (None: aging.DEFAULT_STEPS)
    # how much of the change ``difference`` / ``network`` add (None: the model's default)
    strength: float | None = None
    pairs: str | None = None  # a pairs.csv to check the run's FR beside dlib (optional)
    pairs_limit: int | None = 200  # pairs checked (dlib reads ~10 faces/s on a CPU)
    seed: int = 0
    batch_size: int = 64  # faces per network call (and per batch of latent optimisation)
    # the two-sample realism test's seeds per method (0: not measured); 5 grouped folds each
    realism_seeds: int = 3
    # the side the test faces are loaded and aged at (None: the run's image_size); the 64 px
    # networks read them resized, the judges at this side
    side: int | None = None
    progress: bool = True

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise SettingError(f"unknown latent methods {unknown} in {setting('methods')}; "
                               f"choose from {list(METHODS)}")
        if self.per_age < 1:
            raise SettingError(f"{setting('per_age')} must be at least 1, got {self.per_age}")
        if self.realism_seeds < 0:
            raise SettingError(f"{setting('realism_seeds')} must be 0 or more, got "
                               f"{self.realism_seeds}")
        if self.side is not None and self.side < 1:
            raise SettingError(f"{setting('side')} must be at least 1, got {self.side}")
        if self.batch_size < 1:
            raise SettingError(f"{setting('batch_size')} must be at least 1, got "
                               f"{self.batch_size}")

    def to_dict(self) -> dict:
        """JSON-ready (lists, not tuples): the same in memory and read back from a file."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def _log(progress, message):
    if progress:
        print(message, flush=True)


def split_methods(text: str) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    """``evaluate.py --methods``: 'all', or a comma list of per-photo method names
    (``age_cgan.aging.METHODS``: none, pixel, identity, ...; the paper's z0, z*_pixel, z*_IP
    are none, pixel and identity) -> (the identity table's methods by their paper names, the
    aging section's methods; None: every one ``age_cgan.aging.METHODS`` lists)."""
    if text.strip().lower() == "all":
        return tuple(METHODS), None
    paper_name = {mode: name for name, mode in METHODS.items()}
    aging = tuple(dict.fromkeys(METHODS.get(n.strip(), n.strip()) for n in text.split(",")
                                if n.strip()))
    if not aging:
        raise SettingError(f"{setting('methods')} names no method")
    return tuple(paper_name[m] for m in aging if m in paper_name), aging
