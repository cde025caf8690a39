"""What a face source holds, read in a second without decoding it: the faces' side in pixels
and the training faces per age category. Every command checks its faces with it before any
work, so that 64 px faces are never upscaled where 128 px ones are meant, and a source too small
for a batch or for the age prototypes is refused before an hour of training, not after it.

    survey("~/data/utkface64").side            # 64
    check_faces("~/data/utkface64", "prototype_data", side=128)   # SettingError, one line
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from age_cgan.ages import AgeBins
from age_cgan.data.dataset import split_keys, split_test
from age_cgan.data.readers import find_source
from age_cgan.errors import SettingError, setting

#: Image headers read for the side (a seeded sample; the median is the folder's side).
SAMPLE = 32
#: The validation share of the training faces the image-to-image stages leave out
#: (``dataset.validation_rows``' default).
VALIDATION = 0.05


def prepare_command(side: int) -> str:
    """The command that makes UTKFace faces of ``side`` px (``python -m age_cgan.data``)."""
    return (f"`python -m age_cgan.data prepare UTKFACE_DIR ~/data/utkface{side} "
            f"--size {side}`")


@dataclasses.dataclass(frozen=True, eq=False)
class Survey:
    """``side``: the median shorter side (px) of a sample of the source's images, None when
    none could be read; ``train_counts``: training faces per category (the split of
    ``load_dataset``, before any image is found unusable); ``labels``: the categories;
    ``train_names`` / ``train_categories``: the training faces' file names (N,) and
    categories (N,)."""

    path: str
    side: int | None
    train_counts: tuple[int, ...]
    labels: tuple[str, ...]
    train_names: np.ndarray
    train_categories: np.ndarray

    @property
    def train_faces(self) -> int:
        return sum(self.train_counts)


def image_side(path) -> int | None:
    """The shorter side (px) of an image file, from its header; None when unreadable."""
    try:
        with Image.open(path) as image:
            return min(image.size)
    except (OSError, ValueError, SyntaxError):
        return None


def survey(source, age_bins=None, test_fraction: float = 0.1, seed: int = 0) -> Survey:
    """Survey ``source`` (as ``load_dataset`` reads it: a folder, a .csv, a .mat)."""
    found = find_source(source)
    listing = found.read()
    bins = AgeBins.parse(age_bins)
    categories = bins.category(listing.ages)
    keep = categories >= 0
    names = np.asarray(listing.names, dtype=str)[keep]
    identities = np.asarray(listing.identities, dtype=str)[keep]
    is_test = split_test(split_keys(names, identities), test_fraction, seed)
    counts = np.bincount(categories[keep][~is_test], minlength=bins.num_ages)
    paths = listing.paths()
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(paths), min(SAMPLE, len(paths)), replace=False) if paths else []
    sides = [s for s in (image_side(paths[i]) for i in picked) if s is not None]
    return Survey(str(found.path), int(np.median(sides)) if sides else None,
                  tuple(int(c) for c in counts), tuple(bins.labels), names[~is_test],
                  categories[keep][~is_test])


def check_faces(source, option: str, side: int | None = None, per_category: int = 0,
                rows: int = 0, for_what: str = "", age_bins=None, test_fraction: float = 0.1,
                seed: int = 0, stage_rows=lambda survey: survey.train_faces,
                given_as: str | None = None) -> Survey:
    """Refuse (SettingError, one line naming ``option`` and the command that makes the right
    faces) a ``source`` whose faces are smaller than ``side`` px, with fewer than
    ``per_category`` training faces in some category, or fewer than ``rows`` (a batch) in
    ``stage_rows(survey)``; ``for_what`` says who needs them ("the age prototypes", "stage
    aging"); ``given_as``: the setting ``source`` came from, when not ``option`` (the
    prototypes' faces default to the run's data)."""
    found = survey(source, age_bins, test_fraction, seed)
    named = f"{setting(given_as or option)} {source}"
    if side and found.side is not None and found.side < side:
        raise SettingError(f"faces of at least {side} px are needed for {for_what}, and {named} "
                           f"holds {found.side} px faces (they would be upscaled): give "
                           f"{setting(option)} a folder of {side} px faces, made with "
                           f"{prepare_command(side)}")
    short = [f"{label} {n}" for label, n in zip(found.labels, found.train_counts)
             if n < per_category]
    if short:
        raise SettingError(f"at least {per_category} training faces in every age category are "
                           f"needed for {for_what}, and {named} has {', '.join(short)}: give "
                           f"{setting(option)} more faces (the whole UTKFace, made with "
                           f"{prepare_command(side or 128)})")
    available = stage_rows(found)
    if rows > available:
        raise SettingError(f"{setting('batch_size', rows)} is larger than the {available} "
                           f"training faces {for_what} draws from in {named}: pass "
                           f"{setting('batch_size', max(1, available))} or less, or give "
                           f"{setting(option)} more faces")
    return found


def unvalidated(survey: Survey) -> int:
    """The training faces an image-to-image stage draws from: the validation share left out."""
    return survey.train_faces - int(round(survey.train_faces * VALIDATION))


__all__ = ["Survey", "check_faces", "image_side", "prepare_command", "survey", "unvalidated"]
