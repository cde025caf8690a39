"""Find faces in arbitrary photos and crop them the way the training faces were cropped.

``find_faces(path, size)`` reads a photo of any size and mode (EXIF rotation applied;
greyscale, palette, alpha, 16-bit and CMYK converted to RGB), detects the faces, and returns
them largest first, each cropped square around the face and resized to ``size`` (uint8 RGB).
Failures raise a ``PhotoError`` whose message names the file and says what to do.

Detector: dlib's HOG + linear SVM frontal-face detector (``dlib.get_frontal_face_detector``).
Its model is compiled into the library, so the ``dlib-bin`` wheel (about 11 MB, prebuilt for
Linux, macOS and Windows) is all it needs, offline. Measured on the 120 CACD head shots of
shared/data/photos (250x250, one main face each), 2-core development CPU:

=================================================  ========  ====================
detector                                           found     ms per photo
=================================================  ========  ====================
dlib HOG, no upsampling (used first)               120/120   12.7
dlib HOG, upsampled once                           119/120   36.2
OpenCV 4.14 Haar ``frontalface_default``           117/120   55.9 (5 with extras)
OpenCV 4.14 Haar ``frontalface_alt2``              116/120   44.4
=================================================  ========  ====================

OpenCV is also a 70+ MB wheel, its 5.x wheels no longer ship the Haar cascades, and its DNN
detector (``FaceDetectorYN``) needs a model file that no wheel ships; mediapipe is heavier
still. HOG misses faces under ~80 px, so a photo with none found is searched again upsampled
once (faces down to ~40 px), and large photos are searched at most ``MAX_DETECT_SIDE`` wide
(the crop itself is taken from the decoded photo, not the search copy). Where that finds
nothing, two more views (``FaceDetector._views``): the photo set in a border half its side wide
(a close-up whose face fills the frame, and more, is found: HOG's window must hold the whole
face; the astronaut cropped to 0.6-0.75 of its face box was missed before), then, for a photo
larger than ``MAX_DETECT_SIDE``, the photo at up to twice that side upsampled once (a 184 px
face in an 8000x6000 photo; this last pass costs seconds, and runs only when nothing else
found a face). Each face's box is then
refined at three pyramid phases (``FaceDetector.refine``); with it the whole of
``find_faces`` (read, detect, refine, crop) takes 26 ms per head shot above, 120/120 found.

Crop: the training faces are UTKFace's aligned chips (resized to 64x64). On 393 of 400 such
chips (upscaled to 150-300 px and set in a grey photo twice their size, then detected and
refined) dlib's square box spans ``FACE_FRACTION`` = 0.895 of the chip's side on average
(spread 5% of the side), its centre at (0.494, 0.490) of the chip. So a photo's face is cropped
as a square of side box / 0.895 around the box centre moved by that offset: the margin and
position of a training face. Parts of the crop outside the photo mirror the photo, blurred
more with distance (``_padded``): no edge pixel repeats into streaks.
The crop is not rotated to level the eyes, so a tilted head stays tilted, unlike UTKFace's
aligned chips; the prototype method reads the crop's own landmarks instead.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from age_cgan.data.images import to_rgb
from age_cgan.errors import AgeCganError

#: Side of the square dlib box as a fraction of a UTKFace chip's side (measured, see above).
FACE_FRACTION = 0.895
#: Centre of the dlib box within a UTKFace chip, as fractions of the chip's side (x, y).
BOX_CENTRE_IN_CHIP = (0.494, 0.490)
#: Photos are searched at most this many pixels on their longer side (speed; JPEGs decode at
#: a reduced scale close to it).
MAX_DETECT_SIDE = 1024
#: The largest side of a face crop at the photo's own resolution (the aged face users see).
DETAIL_SIDE = 256
#: Refinement (FaceDetector.refine): the face's size in the window, the window's margin.
REFINE_FACE_SIDE = 100
REFINE_MARGIN = 0.35
#: Faces below this dlib score are kept only when no face reaches it (main faces of the 120
#: head shots: 5th percentile 0.73; faint non-faces of the upsampled pass: ~0.01-0.12).
CONFIDENT_SCORE = 0.5
#: No face can be found in a photo smaller than this (HOG needs ~40 px even upsampled).
MIN_PHOTO_SIDE = 48
#: File name endings read from a folder of photos.
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


class PhotoError(AgeCganError):
    """A photo that yields no face; the message names the file and suggests a fix."""

    def __init__(self, path, message: str):
        super().__init__(f"{path}: {message}")
        self.path = str(path)


class UnreadablePhoto(PhotoError):
    """Missing, empty, not an image, or truncated."""


class PhotoTooSmall(PhotoError):
    """Smaller than MIN_PHOTO_SIDE on a side."""


class NoFaceFound(PhotoError):
    """The detector found no face."""


@dataclasses.dataclass(frozen=True)
class Box:
    """An axis-aligned box in photo pixels: ``left <= x < right``, ``top <= y < bottom``."""

    left: float
    top: float
    right: float
    bottom: float

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def area(self) -> float:
        return self.width * (self.bottom - self.top)

    def scaled(self, factor: float) -> "Box":
        return Box(self.left * factor, self.top * factor, self.right * factor, self.bottom * factor)

    def as_list(self) -> list[float]:
        return [round(v, 1) for v in (self.left, self.top, self.right, self.bottom)]


@dataclasses.dataclass(frozen=True)
class Face:
    """One detected face: ``image`` is the (size, size, 3) uint8 crop of ``crop_box`` the
    networks read; ``detail`` the same crop at its own size in the photo, at most
    ``DETAIL_SIDE`` pixels (and never below ``size``), to which an aging change is added."""

    image: np.ndarray
    box: Box  # the detector's box
    crop_box: Box  # the square that was cropped (may reach outside the photo)
    score: float  # detector confidence (dlib SVM margin; > 0 is a detection)
    detail: np.ndarray | None = None


def read_photo(path) -> tuple[Image.Image, float]:
    """Open a photo as RGB with its EXIF rotation applied. Returns (image, scale): JPEGs much
    larger than MAX_DETECT_SIDE decode at a reduced scale, ``scale`` photo pixels per image
    pixel (1.0 otherwise). Raises UnreadablePhoto or PhotoTooSmall."""
    path = Path(path)
    if not path.exists():
        raise UnreadablePhoto(path, "no such file")
    if path.is_dir():
        raise UnreadablePhoto(path, "is a folder, not a photo")
    if path.stat().st_size == 0:
        raise UnreadablePhoto(path, "the file is empty (0 bytes)")
    try:
        with Image.open(path) as image:
            if min(image.size) < MIN_PHOTO_SIDE:
                raise PhotoTooSmall(
                    path,
                    f"the image is too small ({image.size[0]}x{image.size[1]} px) to find a face "
                    f"in; use a photo at least {MIN_PHOTO_SIDE} px on each side, with the face "
                    "at least ~50 px wide",
                )
            full_width = image.size[0]
            image.draft("RGB", (MAX_DETECT_SIDE, MAX_DETECT_SIDE))
            scale = full_width / image.size[0]
            image = ImageOps.exif_transpose(image)
            return to_rgb(image), scale
    except PhotoError:
        raise
    except UnidentifiedImageError:
        raise UnreadablePhoto(path, "not an image file Pillow can read (JPEG, PNG, ...)") from None
    except Exception as error:  # truncated files raise OSError, SyntaxError, ValueError, ...
        detail = f"{type(error).__name__}: {error}"
        raise UnreadablePhoto(path, f"cannot read the image ({detail})") from None


class FaceDetector:
    """dlib's HOG frontal-face detector over RGB photos of any size (see the module notes).

    ``refine``: dlib's boxes come in steps of its image pyramid (each level 5/6 of the last),
    so a box's size is off by up to ~10%; each face is detected again at two intermediate
    scales in a small window around it and the boxes are averaged (on UTKFace chips the box
    width's spread drops from 7.6% to 5.3% of the chip, for ~2 ms a face).
    """

    REFINE_FACTORS = (1.0, (5 / 6) ** (1 / 3), (5 / 6) ** (2 / 3))  # dlib's pyramid: 5/6

    def __init__(self, max_side: int = MAX_DETECT_SIDE, retry_upsampled: bool = True,
                 refine: bool = True):
        try:
            import dlib
        except ImportError:
            raise ImportError(
                "face detection needs dlib: `pip install dlib-bin` (prebuilt wheels, no compiler)"
            ) from None
        self._detector = dlib.get_frontal_face_detector()
        self.max_side, self.retry_upsampled, self.refine = max_side, retry_upsampled, refine

    def _run(self, pixels: np.ndarray, upsample: int, factor: float = 1.0):
        rects, scores, _ = self._detector.run(pixels, upsample, 0.0)
        return [(Box(r.left(), r.top(), r.right() + 1, r.bottom() + 1).scaled(1 / factor), s)
                for r, s in zip(rects, scores)]

    def detect(self, image: Image.Image) -> list[tuple[Box, float]]:
        """Faces in an RGB image as (box in its pixels, score), largest first.

        Searched in views of the photo until one yields a face (``_views``): the photo at most
        ``max_side`` wide (then upsampled once), a copy padded on every side (a face filling
        the frame, which HOG's window cannot hold otherwise), and, for a photo larger than
        ``max_side``, the photo itself upsampled once (a small face in a large photo).
        Faces scoring under CONFIDENT_SCORE are dropped unless none scores above it (then the
        best one is kept): the upsampled pass finds some faint non-faces besides a real face.
        """
        found = []
        for pixels, upsamples, to_image in self._views(image):
            for upsample in upsamples:
                found = self._run(pixels, upsample)
                if found:
                    break
            if found:
                break
        if not found:
            return []
        confident = [item for item in found if item[1] >= CONFIDENT_SCORE]
        found = confident or [max(found, key=lambda item: item[1])]
        if self.refine:
            found = [(self._refined(pixels, box), s) for box, s in found]
        found = [(to_image(box), s) for box, s in found]
        return sorted(found, key=lambda item: -item[0].area)

    def _views(self, image: Image.Image):
        """Yield (pixels, upsample passes, box -> box in ``image`` pixels), cheapest first."""
        scale = min(1.0, self.max_side / max(image.size))
        small = image
        if scale < 1.0:
            size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
            small = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        yield np.asarray(small), (0, 1) if self.retry_upsampled else (0,), lambda b: b.scaled(
            1 / scale)
        # A face filling the frame: set the photo in a border of its mean colour, half its
        # side wide, so the face is a third of the view (then shrunk to max_side).
        pad = max(small.size) // 2
        mean = tuple(int(v) for v in np.asarray(small).reshape(-1, 3).mean(axis=0))
        padded = Image.new("RGB", (small.size[0] + 2 * pad, small.size[1] + 2 * pad), mean)
        padded.paste(small, (pad, pad))
        shrink = min(1.0, self.max_side / max(padded.size))
        if shrink < 1.0:
            padded = padded.resize((round(padded.size[0] * shrink), round(padded.size[1] * shrink)),
                                   Image.Resampling.BILINEAR)
        yield np.asarray(padded), (0,), lambda b: Box(
            b.left / shrink - pad, b.top / shrink - pad, b.right / shrink - pad,
            b.bottom / shrink - pad).scaled(1 / scale)
        if scale < 1.0 and self.retry_upsampled:  # faces down to ~40 px of the photo itself
            full = min(1.0, 2 * self.max_side / max(image.size))  # (seconds: a 2048 px side)
            if full < 1.0:
                image = image.resize((round(image.size[0] * full), round(image.size[1] * full)),
                                     Image.Resampling.BILINEAR, reducing_gap=2.0)
            yield np.asarray(image), (1,), lambda b: b.scaled(1 / full)

    def _refined(self, pixels: np.ndarray, box: Box) -> Box:
        """The mean of the boxes found around ``box`` at three evenly spaced pyramid phases.

        The window around the face is resized so that the face is REFINE_FACE_SIDE px at the
        first phase: large enough for HOG's 80 px window at every phase, small enough to be fast.
        """
        height, width = pixels.shape[:2]
        margin = box.width * REFINE_MARGIN
        left, top = max(0, int(box.left - margin)), max(0, int(box.top - margin))
        right, bottom = min(width, int(box.right + margin)), min(height, int(box.bottom + margin))
        window = Image.fromarray(np.ascontiguousarray(pixels[top:bottom, left:right]))
        base = REFINE_FACE_SIDE / box.width
        boxes = []
        for factor in (base * f for f in self.REFINE_FACTORS):
            size = (round(window.size[0] * factor), round(window.size[1] * factor))
            resized = np.asarray(window.resize(size, Image.Resampling.BILINEAR))
            near = [Box(b.left + left, b.top + top, b.right + left, b.bottom + top)
                    for b, _ in self._run(resized, 0, factor)]
            near = [b for b in near if _overlap(b, box) > 0.4]
            if near:
                boxes.append(max(near, key=lambda b: _overlap(b, box)))
        if not boxes:
            return box
        return Box(*np.mean([[b.left, b.top, b.right, b.bottom] for b in boxes], axis=0).tolist())


def _overlap(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    w = max(0.0, min(a.right, b.right) - max(a.left, b.left))
    h = max(0.0, min(a.bottom, b.bottom) - max(a.top, b.top))
    return w * h / (a.area + b.area - w * h)


def crop_box_for(box: Box) -> Box:
    """The square crop whose face sits like a training face's (margin and centre measured)."""
    side = box.width / FACE_FRACTION
    centre_x = (box.left + box.right) / 2 + (0.5 - BOX_CENTRE_IN_CHIP[0]) * side
    centre_y = (box.top + box.bottom) / 2 + (0.5 - BOX_CENTRE_IN_CHIP[1]) * side
    return Box(centre_x - side / 2, centre_y - side / 2, centre_x + side / 2, centre_y + side / 2)


def crop_face(image: Image.Image, crop: Box, size: int) -> np.ndarray:
    """Cut ``crop`` out of an RGB image (edge pixels repeated outside it), Lanczos to size."""
    pixels = np.asarray(image)
    height, width = pixels.shape[:2]
    side = max(1, round(crop.width))
    left, top = math.floor(crop.left), math.floor(crop.top)
    inside = pixels[max(top, 0):min(top + side, height), max(left, 0):min(left + side, width)]
    pads = (
        (max(0, -top), max(0, top + side - height)),
        (max(0, -left), max(0, left + side - width)),
        (0, 0),
    )
    if any(p for pair in pads[:2] for p in pair):
        inside = _padded(inside, pads)
    square = Image.fromarray(np.ascontiguousarray(inside))
    if square.size != (size, size):  # same resampling as the training faces (data.images)
        square = square.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(square, dtype=np.uint8)


def _padded(pixels: np.ndarray, pads) -> np.ndarray:
    """The photo's part of a crop padded where the crop runs past its edge: mirrored, then
    blurred more the further from the edge (an out-of-focus continuation of the background),
    so that no edge pixel is repeated into streaks that an aging warp would drag inwards."""
    from scipy import ndimage

    mirrored = np.pad(pixels.astype(np.float32), pads, mode="symmetric")
    height, width = mirrored.shape[:2]
    (top, bottom), (left, right) = pads[0], pads[1]
    yy, xx = np.mgrid[0:height, 0:width]
    outside = np.maximum.reduce([top - yy, yy - (height - 1 - bottom), left - xx,
                                 xx - (width - 1 - right), np.zeros_like(yy)]).astype(np.float32)
    sigma = max(2.0, max(height, width) / 25.0)
    soft = ndimage.gaussian_filter(mirrored, (sigma, sigma, 0), mode="reflect")
    weight = np.clip(outside / sigma, 0.0, 1.0)[..., None]
    return np.clip(np.rint(weight * soft + (1.0 - weight) * mirrored), 0, 255).astype(np.uint8)


def find_faces(photo, size: int, detector: FaceDetector | None = None,
               all_faces: bool = True) -> list[Face]:
    """Detect and crop the faces of a photo (a path or a PIL image), largest first.

    Returns every face, or only the largest when ``all_faces`` is False; boxes are in the
    photo's pixels (after EXIF rotation). Raises UnreadablePhoto, PhotoTooSmall or NoFaceFound
    (messages name the file).
    """
    if isinstance(photo, Image.Image):
        name, image, scale = "image", to_rgb(photo), 1.0
    else:
        name, (image, scale) = photo, read_photo(photo)
    detector = detector or FaceDetector()
    found = detector.detect(image)
    if not found:
        width, height = (round(side * scale) for side in image.size)  # the photo's own size
        raise NoFaceFound(
            name,
            f"no face found in this {width}x{height} photo. Use a photo where one "
            "face is seen from the front, upright and at least ~50 px wide; a tighter crop "
            "around the head helps.",
        )
    if not all_faces:
        found = found[:1]
    faces = []
    for box, score in found:
        crop = crop_box_for(box)
        detail_side = int(min(DETAIL_SIDE, max(size, round(crop.width))))
        faces.append(Face(crop_face(image, crop, size), box.scaled(scale), crop.scaled(scale),
                          float(score), crop_face(image, crop, detail_side)))
    return faces


def list_photos(paths) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand files and folders (not recursive) into photo paths, in the given order.

    Returns (photos, problems): a path that does not exist, or a folder with no photo in it,
    is a problem (path, reason) instead of a photo.
    """
    photos, problems = [], []
    for entry in map(Path, paths):
        if entry.is_dir():
            inside = sorted(p for p in entry.iterdir()
                            if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
            if not inside:
                kinds = ", ".join(PHOTO_SUFFIXES)
                problems.append((str(entry), f"no photos ({kinds}) in this folder"))
            photos.extend(inside)
        elif entry.exists():
            photos.append(entry)
        else:
            problems.append((str(entry), "no such file or folder"))
    return photos, problems
