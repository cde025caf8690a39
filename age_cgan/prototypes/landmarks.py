"""dlib's 68 facial landmarks of face crops: for building the prototypes and for aging a photo.

The landmark model ships in ``face-recognition-models``, a dependency of every install: the
prototype method reads each photo's own landmarks with it (``crop_landmarks``), and falls back
to the category's mean shape only where the package is missing. At build time each
crop's largest face found by dlib's HOG detector (not upsampled: UTKFace's 128 px chips hold
faces of ~100 px) is given to the 68-point shape predictor; a crop where no face is found gets
NaN landmarks and is counted by the caller.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from age_cgan.errors import AgeCganError

_MODELS = {}


class LandmarksUnavailable(AgeCganError):
    """dlib or its landmark model is not installed."""


def _models():
    if "missing" in _MODELS:  # found out once: no import is tried again per face
        raise LandmarksUnavailable(_MODELS["missing"])
    if not _MODELS:
        try:
            import dlib
            import face_recognition_models
        except ImportError as error:
            _MODELS["missing"] = (f"dlib's landmark model is not installed ({error.name}): "
                                  "pip install face-recognition-models dlib-bin")
            raise LandmarksUnavailable(_MODELS["missing"]) from None
        _MODELS["detector"] = dlib.get_frontal_face_detector()
        _MODELS["predictor"] = dlib.shape_predictor(
            face_recognition_models.pose_predictor_model_location())
    return _MODELS["detector"], _MODELS["predictor"]


def landmarks(face: np.ndarray) -> np.ndarray:
    """uint8 face (S, S, 3) -> float32 (68, 2) (x, y) as fractions of S; NaN where no face."""
    detector, predictor = _models()
    face = np.ascontiguousarray(face, np.uint8)
    found = detector(face, 0)
    if not len(found):
        return np.full((68, 2), np.nan, np.float32)
    box = max(found, key=lambda r: r.width() * r.height())
    shape = predictor(face, box)
    points = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
    return (points + 0.5) / face.shape[0]


def _chunk(faces: np.ndarray) -> np.ndarray:
    return np.stack([landmarks(face) for face in faces])


def all_landmarks(faces: np.ndarray, workers: int | None = None, progress: bool = True,
                  chunk: int = 256) -> np.ndarray:
    """Landmarks of every uint8 face (N, S, S, 3): float32 (N, 68, 2), NaN rows where none were
    found; ``workers`` processes (default: the CPUs), in order."""
    _models()  # fail here, once, when dlib is missing
    workers = workers or os.cpu_count() or 1
    pieces = [faces[i:i + chunk] for i in range(0, len(faces), chunk)]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(faces), desc="landmarks", unit="face")
    out = []
    with ProcessPoolExecutor(workers) as pool:
        for result in pool.map(_chunk, pieces):
            out.append(result)
            if bar is not None:
                bar.update(len(result))
    if bar is not None:
        bar.close()
    return np.concatenate(out) if out else np.zeros((0, 68, 2), np.float32)


def available() -> bool:
    """Whether dlib's landmark model is installed (``face-recognition-models``)."""
    try:
        _models()
    except LandmarksUnavailable:
        return False
    return True


def crop_landmarks(crop: np.ndarray) -> np.ndarray | None:
    """The 68 landmarks (x, y fractions of the side) of a face crop made by ``faces.find_faces``
    (or an aligned chip), or None where dlib's landmark model is not installed. The face's box
    in the crop is where the crop put it (``faces.FACE_FRACTION`` of the side around
    ``faces.BOX_CENTRE_IN_CHIP``), so no detection is needed: ~2 ms a face."""
    from age_cgan.faces import BOX_CENTRE_IN_CHIP, FACE_FRACTION

    if not available():
        return None
    import dlib

    crop = np.ascontiguousarray(crop, np.uint8)
    side = crop.shape[0]
    half = FACE_FRACTION * side / 2
    cx, cy = BOX_CENTRE_IN_CHIP[0] * side, BOX_CENTRE_IN_CHIP[1] * side
    box = dlib.rectangle(int(round(cx - half)), int(round(cy - half)),
                         int(round(cx + half)), int(round(cy + half)))
    shape = _models()[1](crop, box)
    points = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
    return (points + 0.5) / side
