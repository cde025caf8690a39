"""Per-pixel image functions the age prototypes are built and applied with.

Plain functions over float arrays in [0, 1] (images (H, W, 3), fields (H, W)), one parameter per
physical quantity, lengths in pixels of the image they are given. Nothing here knows about age.

>>> image = np.zeros((128, 128, 3), np.float32)
>>> luma, chroma = split_luma(image)
>>> luma.shape, chroma.shape
((128, 128), (128, 128, 3))
>>> [b.shape for b in bands(luma, (1, 2, 4, 8))][0], len(bands(luma, (1, 2, 4, 8)))
((128, 128), 5)
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

#: ITU-R BT.601 luma weights: the brightness a grey photo keeps.
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def split_luma(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RGB (H, W, 3) -> (luma (H, W), chroma (H, W, 3) = RGB - luma); a grey pixel has chroma 0,
    so a change of luma and a scaling of chroma can never give it a hue."""
    image = np.asarray(image, np.float32)
    luma = image @ LUMA
    return luma, image - luma[..., None]


def bands(luma: np.ndarray, sigmas) -> list[np.ndarray]:
    """A Gaussian-difference stack: [luma - G(s0), G(s0) - G(s1), ..., G(s_last)] for the
    increasing ``sigmas`` (pixels); the parts sum back to ``luma`` exactly."""
    luma = np.asarray(luma, np.float32)
    out, previous = [], luma
    for sigma in sigmas:
        blurred = ndimage.gaussian_filter(luma, sigma, mode="nearest")
        out.append(previous - blurred)
        previous = blurred
    out.append(previous)
    return out


def local_mean(field: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian local mean of a field (H, W) or of each channel of (H, W, C), in pixels."""
    field = np.asarray(field, np.float32)
    sigmas = (sigma, sigma) + (0,) * (field.ndim - 2)
    return ndimage.gaussian_filter(field, sigmas, mode="nearest")


def resize(field: np.ndarray, side: int) -> np.ndarray:
    """A float field (H, W) or (H, W, C) resized to (side, side) bicubic (no change when it is
    that size already)."""
    field = np.asarray(field, np.float32)
    if field.shape[0] == side and field.shape[1] == side:
        return field
    if field.ndim == 2:
        return np.asarray(Image.fromarray(field, mode="F").resize(
            (side, side), Image.Resampling.BICUBIC))
    return np.stack([resize(field[..., k], side) for k in range(field.shape[-1])], axis=-1)


def face_hull(points: np.ndarray, side: int, lift: float | None = None,
              soften: float = 40.0) -> np.ndarray:
    """(side, side) in [0, 1]: the face inside its jaw line and up to the hairline (the brows
    raised by ``lift``, a fraction of the side; default half the brow-to-nose-tip height),
    softened at the edge over side / ``soften`` px."""
    from PIL import Image, ImageDraw

    points = np.asarray(points, np.float32)
    if lift is None:
        lift = 0.5 * (points[33, 1] - points[17:27, 1].mean())
    outline = np.concatenate([points[0:17], points[26:16:-1] - [0.0, lift]]) * side
    mask = Image.new("F", (side, side), 0.0)
    ImageDraw.Draw(mask).polygon([tuple(p) for p in outline.tolist()], fill=1.0)
    return local_mean(np.asarray(mask), side / soften)


def skin_mask(points: np.ndarray, side: int, eyes: float = 1.9) -> np.ndarray:
    """(side, side) in [0, 1]: the face's skin, inside its outline (``face_hull``) less the
    eyes, brows, lips and nostrils (each an ellipse around its 68-point landmarks, enlarged;
    the eyes ``eyes`` times), with soft edges: where wrinkles and pores are, not the features."""
    from PIL import Image, ImageDraw

    pixels = np.asarray(points, np.float32) * side
    mask = Image.new("F", (side, side), 0.0)
    draw = ImageDraw.Draw(mask)
    for part, grow in ((slice(36, 42), eyes), (slice(42, 48), eyes), (slice(17, 22), 1.5),
                       (slice(22, 27), 1.5), (slice(48, 60), 1.35), (slice(31, 36), 1.6)):
        centre = pixels[part].mean(0)
        half = np.maximum((pixels[part].max(0) - pixels[part].min(0)) / 2 * grow, side / 60)
        draw.ellipse([tuple(centre - half), tuple(centre + half)], fill=1.0)
    features = local_mean(np.asarray(mask), side / 64.0)
    return np.clip(face_hull(points, side) - 1.5 * features, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- warps


def border_points(count: int = 8) -> np.ndarray:
    """(4 * count, 2) points on the unit square's border, held still by every warp so that a
    shape change moves the face and leaves the crop's edge where it is."""
    t = np.linspace(0.0, 1.0, count, endpoint=False)
    return np.concatenate([np.stack([t, np.zeros_like(t)], 1), np.stack([np.ones_like(t), t], 1),
                           np.stack([1 - t, np.ones_like(t)], 1),
                           np.stack([np.zeros_like(t), 1 - t], 1)]).astype(np.float32)


def displacement(source_points: np.ndarray, target_points: np.ndarray, side: int,
                 grid: int = 32) -> np.ndarray:
    """A dense field (side, side, 2) of (dx, dy) in pixels: where each pixel of an image whose
    landmarks sit at ``target_points`` should be read from an image whose landmarks sit at
    ``source_points`` (both (K, 2) as (x, y) fractions of the side). A thin-plate spline through
    the landmarks and the still border, evaluated on a ``grid`` x ``grid`` lattice and resized:
    smooth, cheap, and the same at every resolution."""
    from scipy.interpolate import RBFInterpolator

    still = border_points()
    fixed = np.concatenate([np.asarray(target_points, np.float64), still])
    moved = np.concatenate([np.asarray(source_points, np.float64), still])
    spline = RBFInterpolator(fixed, moved - fixed, kernel="thin_plate_spline", smoothing=1e-4)
    t = (np.arange(grid) + 0.5) / grid
    xx, yy = np.meshgrid(t, t)
    coarse = spline(np.stack([xx.ravel(), yy.ravel()], 1)).reshape(grid, grid, 2) * side
    return resize(coarse.astype(np.float32), side)


def warp(image: np.ndarray, field: np.ndarray, order: int = 1) -> np.ndarray:
    """Read ``image`` (H, W) or (H, W, C) at each pixel plus ``field`` (H, W, 2) (dx, dy in
    pixels), bilinear (``order`` 3: cubic, which keeps a photo's detail), edges repeated."""
    image = np.asarray(image, np.float32)
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    coords = [yy + field[..., 1], xx + field[..., 0]]
    if image.ndim == 2:
        return ndimage.map_coordinates(image, coords, order=order, mode="nearest")
    return np.stack([ndimage.map_coordinates(image[..., k], coords, order=order, mode="nearest")
                     for k in range(image.shape[-1])], axis=-1)


def area_ratio(field: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """(H, W): how much the mapping x -> x + scale * field (H, W, 2) scales each pixel's area
    (the Jacobian's determinant; <= 0 where it folds)."""
    field = np.asarray(field, np.float32)
    dxy, dxx = np.gradient(field[..., 0])
    dyy, dyx = np.gradient(field[..., 1])
    return (1 + scale * dxx) * (1 + scale * dyy) - scale ** 2 * dxy * dyx


def fold_free(field: np.ndarray, low: float = 0.5, high: float = 2.0) -> np.ndarray:
    """(H, W) in [0, 1]: 1 where the mapping x -> x + field (H, W, 2) keeps areas within
    [low, high] times their size, falling to 0 where it folds or stretches beyond (a spline
    through the landmarks of a turned head extrapolates there: what it carries is noise)."""
    det = area_ratio(field)
    ok = np.clip(np.minimum((det - low * 0.5) / (low * 0.5), (2 * high - det) / high), 0.0, 1.0)
    ok = np.minimum(ok, local_mean(ok, max(1.0, field.shape[0] / 32.0)))  # no stray islands
    return ok.astype(np.float32)


def folding_safe(field: np.ndarray, min_det: float = 0.5, max_shift: float = 0.04) -> np.ndarray:
    """A displacement field (H, W, 2) in pixels scaled down, as a whole, until the mapping
    x -> x + field never compresses an area below ``min_det`` of itself (where the mesh would
    fold, features smear and double), and no pixel moves more than ``max_shift`` of the side."""
    field = np.asarray(field, np.float32)
    side = field.shape[0]
    peak = float(np.sqrt((field ** 2).sum(-1)).max())
    scale = min(1.0, max_shift * side / peak) if peak > 0 else 1.0
    for _ in range(12):
        if area_ratio(field, scale).min() >= min_det:
            break
        scale *= 0.8
    return field * scale
