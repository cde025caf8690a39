"""Grey and white hair for a photo aged to 40+: where this photo's hair is, and how it greys.

Averages of aligned chips crop most hair away, so the prototypes hardly grey it, and a viewer
shown a face aged to 60+ with dark hair names that first. The hair is found from the photo
itself: its colour is sampled in a band above the hairline (from the 68 landmarks: above the
brows by more than the brow-to-eye height, across the brows' width), where hair is on most
heads; the mask is every pixel of the head (above and beside the face, not inside it) whose
colour is near that sample and which holds fine detail like the sample's (strands: a smooth,
out-of-focus background of the hair's colour is left out), softened. Where the band holds no hair (bald heads, hats, hair
lighter than the skin), no mask is made and nothing greys.

Greying moves the hair's light towards ``WHITE`` and takes its colour away, keeping its own
strands (its detail above a few px is kept, only its local mean moves).

>>> mask = hair_mask(np.zeros((64, 64, 3), np.float32), np.full((68, 2), 0.5, np.float32))
>>> mask.shape, float(mask.max())
((64, 64), 0.0)
"""

from __future__ import annotations

import numpy as np

from age_cgan.prototypes import fields

#: The light that fully grey hair moves towards (white-grey, luma in [0, 1]).
WHITE = 0.82
#: How near (RGB distance in [0, 1] units) a pixel's colour must be to the hair sample's.
COLOUR_SIGMA = 0.09
#: The sample band must hold at least this share of pixels darker than the skin by
#: ``DARKER`` and with strands, or no hair is taken to be there.
MIN_HAIR_SHARE = 0.2
DARKER = 0.08
#: A pixel counts fully as hair where its local fine detail reaches this share of the sample's.
STRANDS = 0.7
#: A sample pixel is hair only where its fine detail is this many times the skin's (strands;
#: the background beside a head is most often smooth, out of focus).
SAMPLE_STRANDS = 1.5


def _sample_band(points: np.ndarray, side: int) -> np.ndarray:
    """(side, side) bool: where hair is on most heads, within the crop: above the hairline
    across the brows' width, and at the temples."""
    p = np.asarray(points, np.float32) * side
    brows = p[17:27]
    gap = max(float(p[36:48, 1].mean() - brows[:, 1].mean()), side / 40.0)
    yy, xx = np.mgrid[0:side, 0:side]
    above = (yy <= brows[:, 1].min() - 1.6 * gap) & (xx >= brows[:, 0].min()) & (
        xx <= brows[:, 0].max())
    rows = (yy >= brows[:, 1].min() - 1.5 * gap) & (yy <= p[36:48, 1].mean())
    temples = rows & ((xx < p[0, 0] - 0.3 * gap) | (xx > p[16, 0] + 0.3 * gap))
    return above | temples


def hair_mask(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """float RGB (S, S, 3) in [0, 1] and its 68 landmarks (x, y fractions) -> (S, S) in [0, 1]:
    the photo's hair (all zeros where none is found above the brows)."""
    side = image.shape[0]
    band = _sample_band(points, side)
    hull = fields.face_hull(points, side)
    luma = image @ fields.LUMA
    skin = hull > 0.5
    if band.sum() < 8 or not skin.any():
        return np.zeros((side, side), np.float32)
    skin_light = float(np.median(luma[skin]))
    strands = fields.local_mean(np.abs(fields.bands(luma, (side / 128.0, side / 64.0))[1]),
                                side / 40.0)
    face = _below_hairline(points, side) > 0.5
    hairy = band & (luma < skin_light - DARKER) & (
        strands > SAMPLE_STRANDS * float(np.median(strands[face])))
    if hairy.sum() < MIN_HAIR_SHARE * band.sum():
        return np.zeros((side, side), np.float32)
    colour = np.median(image[hairy], axis=0)
    near = np.exp(-0.5 * (((image - colour) ** 2).sum(-1) / COLOUR_SIGMA ** 2))
    near = near * (luma < skin_light)  # hair darker than the skin (the sample's kind)
    reference = float(np.percentile(strands[hairy], 75))
    near = near * np.clip(strands / (STRANDS * reference + 1e-6), 0, 1)
    head = _head(points, side)
    mask = fields.local_mean(near * head * (1.0 - _below_hairline(points, side)), side / 80.0)
    return np.clip(mask * 1.3, 0.0, 1.0).astype(np.float32)


def _below_hairline(points: np.ndarray, side: int) -> np.ndarray:
    """(side, side) in [0, 1]: the face inside its jaw line, up to the brows raised by the
    brow-to-eye height (a low hairline; above it, only hair-coloured pixels with strands grey)."""
    p = np.asarray(points, np.float32)
    gap = max(float(p[36:48, 1].mean() - p[17:27, 1].mean()), 1.0 / 40.0)
    return fields.face_hull(p, side, lift=gap, soften=60.0)


def _head(points: np.ndarray, side: int) -> np.ndarray:
    """(side, side) in [0, 1]: an ellipse over the face and the hair above and beside it,
    tighter than the crop, so that a background of the hair's colour is mostly left out."""
    p = np.asarray(points, np.float32)
    centre_x = p[:, 0].mean()
    width = p[16, 0] - p[0, 0]
    top = p[17:27, 1].min() - 0.55 * width
    bottom = p[8, 1]
    centre_y = (top + bottom) / 2
    t = (np.arange(side) + 0.5) / side
    xx, yy = np.meshgrid(t, t)
    r = np.hypot((xx - centre_x) / (0.78 * width), (yy - centre_y) / (0.62 * (bottom - top)))
    return np.clip((1.15 - r) / 0.15, 0.0, 1.0).astype(np.float32)


def grey_hair(image: np.ndarray, mask: np.ndarray, amount: float) -> np.ndarray:
    """float RGB (S, S, 3): the hair of ``mask`` greyed by ``amount`` in [0, 1] (1: white-grey,
    no colour), its strands kept."""
    side = image.shape[0]
    luma = image @ fields.LUMA
    local = fields.local_mean(luma, side / 60.0)
    g = np.clip(amount * mask, 0.0, 1.0)
    light = luma + g * (WHITE - local) * 0.9
    chroma = (image - luma[..., None]) * (1.0 - g[..., None])
    return light[..., None] + chroma
