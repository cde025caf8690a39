"""The age prototypes file: what it holds, written byte-for-byte reproducibly, read with checks.

Per age category (A categories), all in the frame of a face crop aligned like UTKFace's chips
(``faces.crop_box_for`` crops users' photos the same way), (x, y) as fractions of the side:

* ``shape`` (A, 68, 2): the mean landmarks; ``reference_shape`` (68, 2) their mean, the frame
  the other fields are in (every face was warped to it before averaging);
* ``image`` (A, 128, 128, 3): the mean RGB face in [0, 1];
* ``band_magnitude`` (A, B, 64, 64): the local mean |band| of each band of the luma's
  Gaussian-difference stack (``BAND_SIGMAS`` at 128 px): how much texture of each scale;
* ``colour_magnitude`` (A, 64, 64): the local mean |chroma|: how colourful (grey hair is not).

Stored as float16 in an uncompressed-metadata zip of .npy arrays with fixed dates, so that the
same data gives the same file; ``meta`` (JSON) records what it was built from.
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from age_cgan.errors import AgeCganError

#: The side the mean images are stored at (the faces they average are 128 px).
IMAGE_SIDE = 128
#: The side the magnitude fields are stored at (they are smooth: a 64 px field loses nothing).
FIELD_SIDE = 64
#: Sigmas (px at IMAGE_SIDE) of the Gaussian-difference stack: bands of ~1, 2, 4, 8 px detail
#: (pores and grain, fine wrinkles, folds, the face's large shading), then the low-pass.
BAND_SIGMAS = (1.0, 2.0, 4.0, 8.0)
FORMAT = 1
_ARRAYS = ("image", "band_magnitude", "colour_magnitude", "shape", "reference_shape")
#: The range each array's values keep (a little wider: float16 rounding, landmarks a little
#: outside the crop): colours and magnitudes are fractions of full scale, landmarks of the side.
RANGES = {"image": (0.0, 1.0), "band_magnitude": (0.0, 1.0), "colour_magnitude": (0.0, 1.0),
          "shape": (-0.5, 1.5), "reference_shape": (-0.5, 1.5)}
_SLACK = 0.01
BUILD = "`python -m age_cgan.prototypes build DATA OUT.npz`"


def magnitude_sigma(band: int) -> float:
    """The local mean over which a band's magnitude is taken (px at IMAGE_SIDE)."""
    return max(3.0, 2.0 * BAND_SIGMAS[band])


class PrototypeFileError(AgeCganError):
    """A prototype file that is missing, damaged, or made for other age categories."""


@dataclasses.dataclass
class Prototypes:
    bins: str
    image: np.ndarray
    band_magnitude: np.ndarray
    colour_magnitude: np.ndarray
    shape: np.ndarray
    reference_shape: np.ndarray
    meta: dict
    path: Path | None = None

    @property
    def num_ages(self) -> int:
        return int(self.image.shape[0])

    def save(self, path) -> Path:
        """Write the file (float16 fields, float32 shapes) reproducibly; returns the path."""
        from age_cgan.files import atomic_path

        path = Path(path)
        arrays = {"image": self.image.astype(np.float16),
                  "band_magnitude": self.band_magnitude.astype(np.float16),
                  "colour_magnitude": self.colour_magnitude.astype(np.float16),
                  "shape": self.shape.astype(np.float32),
                  "reference_shape": self.reference_shape.astype(np.float32)}
        header = {"format": FORMAT, "bins": self.bins, "band_sigmas": list(BAND_SIGMAS),
                  "image_side": IMAGE_SIDE, "field_side": FIELD_SIDE, **self.meta}
        with atomic_path(path, "the age prototypes") as temporary:
            with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as out:
                for name, data in [("meta.json", json.dumps(header, indent=1, sort_keys=True)
                                    .encode())] + [(f"{k}.npy", _npy(v)) for k, v in
                                                   arrays.items()]:
                    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                    info.compress_type = zipfile.ZIP_DEFLATED
                    out.writestr(info, data)
        return path

    @classmethod
    def load(cls, path, bins: str | None = None) -> "Prototypes":
        """Read and check a prototype file; PrototypeFileError names it and what is wrong
        (``bins``: the age categories the model uses, which the file must have been built for)."""
        path = Path(path)
        if not path.is_file():
            raise PrototypeFileError(f"{path}: no age prototype file here")
        try:
            with zipfile.ZipFile(path) as zf:
                meta = json.loads(zf.read("meta.json"))
                arrays = {k: np.load(io.BytesIO(zf.read(f"{k}.npy")), allow_pickle=False)
                          .astype(np.float32) for k in _ARRAYS}
        except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as error:
            raise PrototypeFileError(f"{path} is not a readable age prototype file "
                                     f"({type(error).__name__}: {error})") from None
        if meta.get("format") != FORMAT or tuple(meta.get("band_sigmas", ())) != BAND_SIGMAS:
            raise PrototypeFileError(f"{path} was written in another prototype format "
                                     f"({meta.get('format')}); build it again")
        a = arrays["image"].shape[0]
        expected = {"image": (a, IMAGE_SIDE, IMAGE_SIDE, 3),
                    "band_magnitude": (a, len(BAND_SIGMAS), FIELD_SIDE, FIELD_SIDE),
                    "colour_magnitude": (a, FIELD_SIDE, FIELD_SIDE), "shape": (a, 68, 2),
                    "reference_shape": (68, 2)}
        wrong = [f"{k} {arrays[k].shape} (not {v})" for k, v in expected.items()
                 if arrays[k].shape != v]
        if wrong or not all(np.isfinite(v).all() for v in arrays.values()):
            raise PrototypeFileError(f"{path} is damaged: " + ("; ".join(wrong)
                                                              or "values that are not finite"))
        scale = range_problem(arrays)
        if scale:
            raise PrototypeFileError(f"{path} holds values on another scale: {scale}; build "
                                     f"it again with {BUILD}")
        if bins is not None and meta.get("bins") != bins:
            raise PrototypeFileError(f"{path} was built for the age categories "
                                     f"{meta.get('bins')!r}, not this model's {bins!r}")
        header = {k: v for k, v in meta.items() if k not in ("format", "bins", "band_sigmas",
                                                              "image_side", "field_side")}
        return cls(bins=meta["bins"], meta=header, path=path, **arrays)


def range_problem(arrays: dict) -> str | None:
    """The first array whose values leave its ``RANGES`` (e.g. a mean face on 0-255), or None."""
    for name, (low, high) in RANGES.items():
        values = arrays[name]
        if values.min() < low - _SLACK or values.max() > high + _SLACK:
            return (f"{name} runs {values.min():.3g} to {values.max():.3g}, not {low:g} to "
                    f"{high:g}")
    return None


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()
