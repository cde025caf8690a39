"""The faces file between the two phases: ``FaceBundle`` (uint8 faces and plain arrays in one
compressed .npz, no pickle), its codecs, and fitting it under a size limit the caller gives
(``fit_file``; ``evaluate.py --max-mib``: the library knows no machine's file limit)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from age_cgan.ages import AgeBins
from age_cgan.errors import SettingError, command, setting
from age_cgan.evaluation.settings import EvaluationError, EvaluationFileMissing
from age_cgan.files import atomic_path

#: Bump when the arrays of a faces file or their meaning change.
FACES_FORMAT = 1


@dataclasses.dataclass(frozen=True, eq=False)
class FaceBundle:
    """Everything the judges need, as uint8 faces and plain arrays (no network, no pickle).

    generated (G, S, S, 3) from z ~ N(0, I), ``per_age`` per category, and their categories;
    the test faces (N, S, S, 3) with categories, true ages and source paths; each latent
    method's reconstruction of them at their own category (M, N, S, S, 3), in ``methods``
    order; the train faces' paths (for the real train-vs-test floor of the statistics);
    ``meta``: run, data, bins, settings, the FR's provenance, timings, optimisation losses.
    ``aged`` (optional; None for a file without the aging section): each per-photo method of
    ``meta["aging"]["methods"]`` on the test faces at every category (M, N, A, S, S, 3).
    """

    meta: dict
    generated: np.ndarray
    generated_categories: np.ndarray
    test_images: np.ndarray
    test_categories: np.ndarray
    test_ages: np.ndarray
    test_paths: np.ndarray
    reconstructions: np.ndarray
    train_paths: np.ndarray
    aged: np.ndarray | None = None

    ARRAYS = ("generated", "generated_categories", "test_images", "test_categories",
              "test_ages", "test_paths", "reconstructions", "train_paths")
    OPTIONAL_ARRAYS = ("aged",)

    @property
    def methods(self) -> list[str]:
        return list(self.meta["methods"])

    @property
    def bins(self) -> AgeBins:
        return AgeBins.parse(self.meta["bins"])

    @property
    def image_size(self) -> int:
        return int(self.test_images.shape[1])

    def reconstruction(self, method: str) -> np.ndarray:
        return self.reconstructions[self.methods.index(method)]

    def subset(self, rows) -> FaceBundle:
        """The same faces file for some test faces only (the generated faces all kept)."""
        rows = np.asarray(rows)
        meta = {**self.meta, "test_faces_exported": self.meta.get(
            "test_faces_exported", int(len(self.test_images)))}
        return dataclasses.replace(
            self, meta=meta, test_images=self.test_images[rows],
            test_categories=self.test_categories[rows], test_ages=self.test_ages[rows],
            test_paths=self.test_paths[rows], reconstructions=self.reconstructions[:, rows],
            aged=None if self.aged is None else self.aged[:, rows])

    def save(self, path, codec: str = "raw") -> Path:
        """One compressed .npz (``np.savez_compressed``, plain arrays), written atomically.

        ``codec`` "raw": the uint8 face arrays as they are (deflate keeps ~90% of a real face's
        bytes); "webp": each face as lossless WebP in one uint8 buffer with offsets (~45%,
        checked to decode to the same pixels; faces that Pillow cannot encode stay raw)."""
        if codec not in FACE_CODECS:
            raise SettingError(f"{setting('codec')} must be one of {FACE_CODECS}, not {codec!r}")
        arrays = {name: getattr(self, name) for name in (*self.ARRAYS, *self.OPTIONAL_ARRAYS)
                  if getattr(self, name) is not None}
        codecs = {}
        if codec == "webp":
            for name in (n for n in IMAGE_ARRAYS if n in arrays):
                packed = _webp_pack(arrays[name])
                if packed is not None:
                    del arrays[name]
                    arrays.update({f"{name}__webp": packed[0], f"{name}__offsets": packed[1],
                                   f"{name}__shape": np.array(getattr(self, name).shape)})
                    codecs[name] = "webp"
        path = Path(path)
        with atomic_path(path, "the exported faces") as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, meta=np.array(json.dumps({**self.meta,
                                                                  "codecs": codecs})),
                                **arrays)
        return path

    @classmethod
    def load(cls, path) -> FaceBundle:
        path = Path(path)
        if not path.is_file():
            raise EvaluationFileMissing(
                f"{path} does not exist (write it with "
                f"{command('evaluate', run='RUN', export_faces=str(path))})")
        with np.load(path, allow_pickle=False) as stored:
            files = set(stored.files)
            missing = [name for name in ("meta", *cls.ARRAYS)
                       if name not in files and f"{name}__webp" not in files]
            if missing:
                raise EvaluationError(f"{path} is not an evaluate.py {setting('export_faces')} "
                                      f"file (no {', '.join(missing)})")
            meta = json.loads(str(stored["meta"]))
            if meta.get("format") != FACES_FORMAT:
                raise EvaluationError(f"{path} has faces format {meta.get('format')}; this "
                                      f"version reads format {FACES_FORMAT}: export it again")
            arrays = {}
            for name in (*cls.ARRAYS, *cls.OPTIONAL_ARRAYS):
                if name not in files and f"{name}__webp" not in files:
                    continue  # an optional array the file does not have
                if name in files:
                    arrays[name] = stored[name]
                else:
                    arrays[name] = _webp_unpack(stored[f"{name}__webp"],
                                                stored[f"{name}__offsets"],
                                                stored[f"{name}__shape"])
            return cls(meta=meta, **arrays)


#: How a faces file may store its faces (FaceBundle.save).
FACE_CODECS = ("raw", "webp")
IMAGE_ARRAYS = ("generated", "test_images", "reconstructions", "aged")


def _webp_pack(images):
    """uint8 (..., S, S, 3) -> (lossless WebP bytes of every face in one uint8 buffer, offsets
    (n + 1,)), or None (with a warning) when Pillow has no WebP or a face does not round-trip."""
    import io
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image, features

    faces = np.asarray(images).reshape((-1, *np.shape(images)[-3:]))
    if not len(faces):
        return None
    if not features.check("webp"):
        warnings.warn("this Pillow has no WebP: the faces are stored raw", stacklevel=3)
        return None

    def encode(face):
        out = io.BytesIO()
        Image.fromarray(face).save(out, "WEBP", lossless=True, quality=100, method=4)
        return out.getvalue()

    with ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
        blobs = list(pool.map(encode, faces))
    offsets = np.zeros(len(blobs) + 1, np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    buffer = np.frombuffer(b"".join(blobs), np.uint8)
    if not np.array_equal(_webp_unpack(buffer, offsets, faces.shape), faces):
        warnings.warn("lossless WebP did not give the same pixels back: the faces are stored "
                      "raw", stacklevel=3)
        return None
    return buffer, offsets


def _webp_unpack(buffer, offsets, shape) -> np.ndarray:
    import io

    from PIL import Image

    data = np.asarray(buffer, np.uint8).tobytes()
    shape = tuple(int(v) for v in shape)
    out = np.zeros((len(offsets) - 1, *shape[-3:]), np.uint8)
    for i in range(len(out)):
        with Image.open(io.BytesIO(data[offsets[i]:offsets[i + 1]])) as image:
            out[i] = np.asarray(image.convert("RGB"))
    return out.reshape(shape)


def fit_file(faces: FaceBundle, path, limit_bytes: int, codec: str = "raw", seed: int = 0,
             tries: int = 4) -> tuple[FaceBundle, Path]:
    """Save ``faces``; while the file is over ``limit_bytes``, keep a seeded random sample of
    fewer test faces (sized from the bytes a face took) and save again."""
    path = faces.save(path, codec)
    for _ in range(tries):
        size, n = path.stat().st_size, len(faces.test_images)
        if size <= limit_bytes or n <= 1:
            break
        images = _images_per_test_face(faces)
        per_face = size / (len(faces.generated) + n * images)
        room = 0.97 * limit_bytes - per_face * len(faces.generated)
        keep = max(1, min(n - 1, int(room / (per_face * images))))
        rows = np.sort(np.random.default_rng(seed).choice(n, keep, replace=False))
        faces = faces.subset(rows)
        path = faces.save(path, codec)
    return faces, path


def _images_per_test_face(faces: FaceBundle) -> int:
    """Faces a file holds per test face: the face, its reconstructions, its aged faces."""
    aged = 0 if faces.aged is None else faces.aged.shape[0] * faces.aged.shape[2]
    return 1 + len(faces.methods) + aged
