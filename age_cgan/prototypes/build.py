"""Build the age prototypes from a folder of faces (UTKFace-named, ideally at 128 px).

From the training split (the test split and the validation split of ``data.validation_rows``
left out, as every stage leaves them), colour faces only:

1. dlib's 68 landmarks of each face (``landmarks``); a face without them is counted and left out.
2. Groups: UTKFace's race and gender in the file name. Each age category weights each group
   that has at least ``min_group`` faces in *every* category equally (a face's weight is
   1 / its group's count in its category), so that the difference between two categories holds
   age and not who is in them. Faces of other groups are left out and counted.
3. Per category, weighted means of: the landmarks (the mean shape); and, each face first warped
   to the reference shape (the mean of the categories' mean shapes), its RGB image, the local
   mean magnitude of each band of its luma's Gaussian-difference stack, and the local mean
   magnitude of its chroma (how colourful it is).

The file (``store.Prototypes``) is small (float16 fields at the resolution each needs) and the
same data gives the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from age_cgan.prototypes import fields
from age_cgan.prototypes.store import (BAND_SIGMAS, FIELD_SIDE, IMAGE_SIDE, Prototypes,
                                       magnitude_sigma)

#: UTKFace's names: AGE_GENDER_RACE_DATETIME.jpg.chip.jpg (gender 0 male, 1 female; race 0-4).
_NAME = re.compile(r"^(\d+)_([01])_([0-4])_")
#: A group (race, gender) counts when it has this many faces in every age category.
MIN_GROUP = 15


def groups_of(paths) -> np.ndarray:
    """(N,) int group = race * 2 + gender from UTKFace file names; -1 where the name has none."""
    out = []
    for path in paths:
        match = _NAME.match(os.path.basename(str(path)))
        out.append(-1 if match is None else int(match.group(3)) * 2 + int(match.group(2)))
    return np.array(out, np.int64)


def check_prototype_faces(source, option: str = "prototype_data", age_bins=None,
                          test_fraction: float = 0.1, seed: int = 0,
                          given_as: str | None = None):
    """Refuse, before the build's minutes (and before any stage trains), faces the prototypes
    cannot be made from: smaller than ``IMAGE_SIDE`` px, fewer than ``MIN_GROUP`` training
    faces in some category, or UTKFace-named faces of which no race-and-gender group has
    ``MIN_GROUP`` in every category (they could not be balanced); ``option`` is the setting
    that names them (a ``SettingError``)."""
    from age_cgan.data.survey import check_faces, prepare_command
    from age_cgan.errors import SettingError, setting

    found = check_faces(source, option, side=IMAGE_SIDE, per_category=MIN_GROUP,
                        for_what="the age prototypes", age_bins=age_bins,
                        test_fraction=test_fraction, seed=seed, given_as=given_as)
    groups = groups_of(found.train_names)
    if (groups >= 0).any() and not balance_weights(found.train_categories, groups,
                                                   len(found.labels), MIN_GROUP)[1]:
        raise SettingError(f"no race-and-gender group of {setting(given_as or option)} "
                           f"{source} has {MIN_GROUP} training faces in every age category, so "
                           f"the age prototypes could not be balanced: give {setting(option)} "
                           f"more faces (the whole UTKFace, made with "
                           f"{prepare_command(IMAGE_SIDE)})")
    return found


def balance_weights(categories, groups, num_ages: int, min_group: int = MIN_GROUP):
    """(weights (N,), the groups kept): each kept group weighs the same in each category."""
    categories, groups = np.asarray(categories), np.asarray(groups)
    known = np.unique(groups[groups >= 0])
    counts = {g: np.bincount(categories[groups == g], minlength=num_ages) for g in known}
    kept = [int(g) for g in known if counts[g].min() >= min_group]
    weights = np.zeros(len(categories), np.float64)
    for g in kept:
        rows = groups == g
        weights[rows] = 1.0 / counts[g][categories[rows]]
    return weights, kept


def _accumulate(args):
    """Weighted sums over one chunk of faces, each warped to the reference shape."""
    faces, points, categories, weights, reference, num_ages = args
    side = faces.shape[1]
    image = np.zeros((num_ages, side, side, 3))
    bands = np.zeros((num_ages, len(BAND_SIGMAS), side, side))
    colour = np.zeros((num_ages, side, side))
    for face, p, a, w in zip(faces, points, categories, weights):
        field = fields.displacement(p, reference, side)
        warped = fields.warp(face.astype(np.float32) / 255.0, field)
        luma, chroma = fields.split_luma(warped)
        image[a] += w * warped
        for k, band in enumerate(fields.bands(luma, BAND_SIGMAS)[:-1]):
            bands[a, k] += w * fields.local_mean(np.abs(band), magnitude_sigma(k))
        colour[a] += w * fields.local_mean(np.linalg.norm(chroma, axis=-1), magnitude_sigma(0))
    return image, bands, colour


def build_prototypes(dataset, landmarks_of=None, min_group: int = MIN_GROUP,
                     workers: int | None = None, progress: bool = True,
                     chunk: int = 512) -> Prototypes:
    """Age prototypes from a ``FaceDataset`` (its faces at ``IMAGE_SIDE`` px, or resized):
    see the module. ``landmarks_of(faces) -> (N, 68, 2)`` defaults to dlib's."""
    from age_cgan.data import is_gray, resize_faces
    from age_cgan.data.dataset import validation_rows
    from age_cgan.prototypes.landmarks import all_landmarks

    landmarks_of = landmarks_of or (lambda f: all_landmarks(f, workers, progress))
    bins, num_ages = dataset.bins, dataset.num_ages
    rows = np.flatnonzero(~dataset.is_test)
    rows = np.setdiff1d(rows, validation_rows(dataset))
    counted = {"training faces": int(len(rows))}
    gray = is_gray(dataset.images[rows])
    rows, counted["greyscale, left out"] = rows[~gray], int(gray.sum())
    faces = resize_faces(dataset.images[rows], IMAGE_SIDE)
    points = landmarks_of(faces)
    found = ~np.isnan(points).any(axis=(1, 2))
    counted["no landmarks found, left out"] = int((~found).sum())
    categories = dataset.categories[rows]
    groups = np.where(found, groups_of(dataset.paths[rows]), -1)
    weights, kept = balance_weights(categories, groups, num_ages, min_group)
    if not kept:  # no race/gender in the names: every face weighs the same in its category
        weights = np.where(found, 1.0 / np.maximum(np.bincount(
            categories[found], minlength=num_ages)[categories], 1), 0.0)
    use = weights > 0
    counted["in a group too small to balance, left out"] = int((found & ~use).sum())
    counted["used"] = int(use.sum())
    faces, points, categories, weights = faces[use], points[use], categories[use], weights[use]
    if np.bincount(categories, minlength=num_ages).min() == 0:
        raise ValueError("some age category has no usable face: "
                         + ", ".join(f"{label} {n}" for label, n in zip(
                             bins.labels, np.bincount(categories, minlength=num_ages))))

    shapes = np.stack([np.average(points[categories == a], axis=0,
                                  weights=weights[categories == a]) for a in range(num_ages)])
    reference = shapes.mean(axis=0)
    jobs = [(faces[i:i + chunk], points[i:i + chunk], categories[i:i + chunk],
             weights[i:i + chunk], reference, num_ages) for i in range(0, len(faces), chunk)]
    total = None
    bar = _bar(progress, len(faces))
    with ProcessPoolExecutor(workers or os.cpu_count() or 1) as pool:
        for job, part in zip(jobs, pool.map(_accumulate, jobs)):
            total = part if total is None else tuple(t + p for t, p in zip(total, part))
            if bar is not None:
                bar.update(len(job[0]))
    if bar is not None:
        bar.close()
    image, bands, colour = (t / np.bincount(categories, weights, num_ages).reshape(
        (-1,) + (1,) * (t.ndim - 1)) for t in total)
    names = sorted(os.path.basename(str(p)) for p in dataset.paths[rows][use])
    return Prototypes(
        bins=bins.spec, image=image, band_magnitude=np.stack(
            [[fields.resize(b, FIELD_SIDE) for b in cat] for cat in bands]),
        colour_magnitude=np.stack([fields.resize(c, FIELD_SIDE) for c in colour]),
        shape=shapes.astype(np.float32), reference_shape=reference.astype(np.float32),
        meta={"source": Path(dataset.summary.source).name, "faces": counted,
              "faces_per_category": np.bincount(categories, minlength=num_ages).tolist(),
              "balanced_groups": ["race %d %s" % (g // 2, "female" if g % 2 else "male")
                                  for g in kept] or "none (no race and gender in the names)",
              "min_group": min_group, "split": "training split without the validation faces",
              "faces_sha256": hashlib.sha256("\n".join(names).encode()).hexdigest()})


def _bar(progress: bool, total: int):
    if not progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc="prototypes", unit="face")
