"""Image decoding (any file -> square RGB uint8 face) and the project's normalise pair.

``decode_face`` turns one file into a (size, size, 3) uint8 array or raises ``SkipImage`` with
the reason; ``decode_all`` runs it over many files in parallel into one preallocated array, so
a failure never shifts a label (the book code drops the image but keeps its label).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Skip reasons, as printed in the summary.
MISSING = "missing"
ZERO_BYTE = "zero-byte"
NON_IMAGE = "not an image"
TRUNCATED = "truncated"
UNREADABLE = "unreadable"
MIN_SIDE = 16  # below this a face carries no usable detail
TINY = f"tiny (< {MIN_SIDE} px)"

#: Crop and resize settings; part of the cache key, so changing them re-decodes.
CROP_SETTINGS = {
    "crop": "centre-square",
    "resample": "lanczos",
    "reducing_gap": 3.0,
    "alpha": "over-white",
    "min_side": MIN_SIDE,
}

#: Files per parallel task: big enough to amortise scheduling, small for a smooth progress bar.
CHUNK = 256


class SkipImage(Exception):
    """An image that cannot be used; ``reason`` is one of the module's reason strings."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB: alpha composited over white, 16-bit and float grey rescaled."""
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    elif mode.startswith("I") or mode == "F":
        # Pillow clamps these to 0..255 when converting; scale 16-bit or [0, 1] data first.
        low, high = image.getextrema()
        if high > 255:
            image = image.point(lambda value: value / 256)
        elif mode == "F" and high <= 1.0:
            image = image.point(lambda value: value * 255)
        image = image.convert("L")
    if image.mode in ("RGBA", "LA", "RGBa", "La"):
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image)
    return image if image.mode == "RGB" else image.convert("RGB")


def crop_resize(image: Image.Image, size: int) -> np.ndarray:
    """Centre square crop, then an antialiased resize to (size, size); returns uint8 HWC."""
    width, height = image.size
    side = min(width, height)
    if (width, height) != (size, size):
        left, top = (width - side) // 2, (height - side) // 2
        image = image.resize(
            (size, size),
            Image.Resampling.LANCZOS,
            box=(left, top, left + side, top + side),
            reducing_gap=CROP_SETTINGS["reducing_gap"],
        )
    return np.asarray(image)


def resize_faces(faces, side: int) -> np.ndarray:
    """uint8 faces (N, S, S, 3) -> (N, side, side, 3), Lanczos as the training faces (the same
    array when they are that size already)."""
    faces = np.asarray(faces)
    if faces.shape[1] == side and faces.shape[2] == side:
        return faces
    return np.stack([np.asarray(Image.fromarray(face).resize((side, side),
                                                             Image.Resampling.LANCZOS))
                     for face in faces])


def decode_face(path: str, size: int, draft: bool = True) -> np.ndarray:
    """Read one image file as a (size, size, 3) uint8 RGB array; raise SkipImage if unusable.

    ``draft``: let a JPEG decode at a reduced scale first (faster; ``prepare`` turns it off to
    resize from the full-resolution pixels)."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise SkipImage(MISSING) from None
    except OSError as error:
        raise SkipImage(UNREADABLE, str(error)) from None
    if stat.st_size == 0:
        raise SkipImage(ZERO_BYTE)
    try:
        with Image.open(path) as image:
            if min(image.size) < MIN_SIDE:
                raise SkipImage(TINY, f"{image.size[0]}x{image.size[1]}")
            if draft:
                image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale when possible
            image = ImageOps.exif_transpose(image)
            return crop_resize(to_rgb(image), size)
    except SkipImage:
        raise
    except UnidentifiedImageError:
        raise SkipImage(NON_IMAGE) from None
    except EOFError:
        raise SkipImage(TRUNCATED) from None
    except OSError as error:
        text = str(error).lower()
        if "truncated" in text:
            raise SkipImage(TRUNCATED, str(error)) from None
        raise SkipImage(UNREADABLE, str(error)) from None
    except Exception as error:  # decoders raise SyntaxError, ValueError, ...
        raise SkipImage(UNREADABLE, f"{type(error).__name__}: {error}") from None


def _decode_into(out: np.ndarray, paths: list[str], size: int) -> list[tuple[int, str]]:
    failures = []
    for index, path in enumerate(paths):
        try:
            out[index] = decode_face(path, size)
        except SkipImage as skip:
            failures.append((index, skip.reason))
    return failures


def _decode_chunk(paths: list[str], size: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
    out = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    return out, _decode_into(out, paths, size)


def default_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(32, cpus))


def decode_all(paths: list[str], size: int, workers: int | None = None, progress: bool = True,
               executor: str = "thread") -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Decode ``paths`` into one (N, size, size, 3) uint8 array (rows of failures are zero).

    Returns the array and the failures as (row, reason), sorted by row. ``executor`` is
    "thread" (default: Pillow releases the GIL while decoding; no start-up cost, no copies)
    or "process" (forkserver workers; gains where per-file Python overhead dominates, as with
    tiny JPEGs). ``workers`` <= 1 decodes in this thread.
    """
    from tqdm.auto import tqdm

    if executor not in ("thread", "process"):
        raise ValueError(f"executor must be 'thread' or 'process', not {executor!r}")
    workers = default_workers() if workers is None else workers
    images = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    failures: list[tuple[int, str]] = []
    starts = range(0, len(paths), CHUNK)
    with tqdm(total=len(paths), desc="decoding faces", unit="img", disable=not progress,
              dynamic_ncols=True) as bar:
        if workers <= 1 or len(paths) <= CHUNK:
            for start in starts:
                chunk = paths[start:start + CHUNK]
                found = _decode_into(images[start:start + len(chunk)], chunk, size)
                failures.extend((start + i, reason) for i, reason in found)
                bar.update(len(chunk))
        elif executor == "thread":
            with ThreadPoolExecutor(workers) as pool:
                tasks = {pool.submit(_decode_into, images[s:s + CHUNK], paths[s:s + CHUNK],
                                     size): s for s in starts}
                try:
                    for task in as_completed(tasks):
                        start = tasks[task]
                        failures.extend((start + i, reason) for i, reason in task.result())
                        bar.update(min(CHUNK, len(paths) - start))
                except BaseException:  # Ctrl-C: do not decode the remaining chunks first
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
        else:
            # forkserver: forking a process whose TensorFlow threads hold locks can hang.
            context = multiprocessing.get_context("forkserver" if os.name == "posix" else None)
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                tasks = {pool.submit(_decode_chunk, paths[s:s + CHUNK], size): s for s in starts}
                for task in as_completed(tasks):
                    start = tasks[task]
                    block, found = task.result()
                    images[start:start + len(block)] = block
                    failures.extend((start + i, reason) for i, reason in found)
                    bar.update(len(block))
    return images, sorted(failures)


# --------------------------------------------------------------------------- value ranges


def normalize(images) -> np.ndarray:
    """uint8 [0, 255] images -> float32 [-1, 1] (x / 127.5 - 1), the generator's tanh range."""
    out = np.asarray(images).astype(np.float32)
    out /= np.float32(127.5)
    out -= np.float32(1.0)
    return out


def denormalize(images) -> np.ndarray:
    """float [-1, 1] (numpy or a backend tensor) -> uint8 [0, 255]: the inverse, clipped, rounded."""
    out = (np.asarray(images, dtype=np.float32) + np.float32(1.0)) * np.float32(127.5)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def is_gray(faces, tolerance: float = 6.0) -> np.ndarray:
    """(B,) True where a uint8 face (B, S, S, 3) is greyscale stored as RGB: its channels differ
    by at most ``tolerance`` levels on average, as scanned or JPEG-ed grey photos do."""
    faces = np.asarray(faces, np.float32)
    spread = faces.max(axis=-1) - faces.min(axis=-1)
    return spread.reshape(len(faces), -1).mean(axis=1) <= tolerance
