"""``prototype``: the photo moved by the difference between two age prototypes.

For a face crop (aligned like the training chips, at its own size D) at source category s and a
target t, with the prototypes of both categories warped from their common frame into the
source's mean shape (where this face's features are), at D px:

* texture: each band k of the face's luma (Gaussian differences, ``BAND_SIGMAS`` scaled to D)
  times (M_t,k / M_s,k) ** texture, the ratio of the prototypes' local band magnitudes (clipped
  to ``RATIO_RANGE``; the finest band at most ``FINEST_CAP`` times, so JPEG grain and noise
  are not made wrinkles), plus
  ``folds`` times the difference of the prototypes' own bands (creases that sit where averages
  put them);
* colour: the face's low-pass luma plus ``colour`` times the difference of the prototypes'
  low-pass lumas; its chroma (RGB minus luma) scaled by the ratio of the prototypes' chroma
  magnitudes ** ``saturation`` (greying hair, paler skin): the photo's own hues, so a grey
  photo stays grey and no tint is painted;
* hair: towards 40+, the photo's own hair (``aging.hair``: its colour sampled above the
  hairline) greys towards white (``greying``, by the ``GREYING`` schedule): aligned chips crop
  most hair away, so the averages hardly grey it.
  Off unless set; the shipped model greys at 1 (chosen on the user's path, where a viewer
  named the missing white hair first);
* shape: the result warped by a thin-plate spline that moves the source's mean landmarks
  ``shape`` of the way to the target's.

Towards a younger category the same steps smooth the skin (ratios below 1) and soften folds;
``younger`` scales the colour steps there and from a child's photo, so that children's pale,
large-eyed averages neither whiten faces nor blacken eyes. The shipped model's strengths (its
``prototype_strengths``) were chosen on photos taken the way ``infer.py`` takes them
(``evaluate.py --photos ... --use choose``): the strongest that kept every target >= 90% the
same person.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

import numpy as np

from age_cgan.aging.hair import grey_hair, hair_mask
from age_cgan.prototypes import fields
from age_cgan.prototypes.store import BAND_SIGMAS, IMAGE_SIDE, Prototypes
from age_cgan.prototypes.textures import EYES, TextureBank, layout, relative_bands

#: A band's texture factor stays in this range: a smooth face's noise is not made wrinkles.
RATIO_RANGE = (0.4, 2.0)
#: The finest band (~1 px at 128 px) is amplified at most this much: there live JPEG grain and
#: sensor noise.
FINEST_CAP = 1.4
#: The coarsest band's ratio (~8 px at 128 px: the face's own light and shade) stays within
#: [1 / cap, cap], so that a bright face is not bleached nor a dark one blackened.
COARSEST_CAP = 1.25
#: How grey hair is at each category (0-18 ... 60+), a fraction of ``greying``: averages of
#: aligned chips crop most hair away, so this schedule is set by hand, not measured.
GREYING = (0.0, 0.0, 0.05, 0.2, 0.45, 1.0)
#: How much of each band's prototype difference ``folds`` adds: the coarsest band's is the
#: mean face's own shading (nose, cheekbones), which painted on a child reads as a mask.
FOLD_WEIGHTS = (1.0, 1.0, 1.0, 0.25)
#: The chroma's scale towards an older / a younger category stays in these ranges (grey stays
#: grey: 0 x anything = 0); below ~0.7 skin turns grey-white, a ghost a viewer names.
OLDER_SATURATION = (0.7, 1.0)
YOUNGER_SATURATION = (0.8, 1.25)
#: The shape warp never shrinks an area below this share of itself (folds smear features), nor
#: moves a pixel more than this share of the crop's side.
MIN_AREA = 0.6
MAX_SHIFT = 0.04
#: How much of a real older face's skin detail (``prototypes.textures``) a face at each category
#: (0-18 ... 60+) carries, times ``real_texture``: a face aged from s to t takes that of t less s.
REAL_TEXTURE = (0.0, 0.0, 0.0, 0.3, 0.5, 0.7)
#: How much of each of the bank's bands (~1, 2, 4 px) is used: its creases (4 px) belong to
#: another face's shape and, warped onto this one, read as swirls; its pores and fine lines do not.
REAL_BANDS = (1.0, 1.0, 0.0)
#: Where the real detail is added, this share of the photo's own detail gives way to it.
REPLACE = 0.6
#: The low-pass light's factor, which the chroma follows, stays in this range.
LIGHT_RANGE = (0.6, 1.6)


@dataclasses.dataclass(frozen=True)
class PrototypeStrengths:
    """How much of each part of the prototypes' difference is applied (1 = as in the averages)."""

    texture: float = 1.5  # exponent on the band-magnitude ratio
    folds: float = 3.0  # the prototypes' own band difference
    colour: float = 3.0  # the low-pass light difference, relative to the prototype's light
    saturation: float = 3.0  # exponent on the chroma-magnitude ratio
    shape: float = 1.0  # fraction of the mean-landmark move
    brightness: float = 0.0  # how much of the prototypes' overall brightness change is kept
    greying: float = 0.0  # how far dark hair turns grey (``GREYING`` of it per target; off)
    younger: float = 0.5  # the colour steps' scale towards a younger category, or from a child
    real_texture: float = 1.0  # how much of a real older face's skin detail (``REAL_TEXTURE``)
    #: every part's scale per target category (empty: 1 for each)
    per_target: tuple = ()

    def scaled(self, strength: float) -> "PrototypeStrengths":
        """Every part times ``strength`` (the user's --strength), ``younger`` kept."""
        return dataclasses.replace(self, **{f.name: getattr(self, f.name) * strength
                                            for f in dataclasses.fields(self)
                                            if f.name not in ("younger", "per_target")})

    @classmethod
    def from_config(cls, values: dict | None) -> "PrototypeStrengths":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(map(float, v)) if k == "per_target" else float(v)
                      for k, v in (values or {}).items() if k in known})


class PrototypeAger:
    """Ages face crops with one ``Prototypes``; the prototypes' fields in each source frame are
    prepared once per (crop side, source category) and kept for the next face."""

    def __init__(self, prototypes: Prototypes, strengths: PrototypeStrengths | None = None,
                 keep: int = 4):
        self.prototypes = prototypes
        self.strengths = strengths or PrototypeStrengths()
        self._frames: OrderedDict = OrderedDict()
        self._keep = keep
        self.bank = TextureBank.beside(getattr(prototypes, "path", None))

    def age(self, face: np.ndarray, source: int, targets, strength: float = 1.0,
            points: np.ndarray | None = None) -> np.ndarray:
        """uint8 face crop (D, D, 3) at category ``source`` -> uint8 (n, D, D, 3), one per
        category of ``targets`` (the source itself: the photo unchanged). ``points``: the
        face's own 68 landmarks (x, y fractions; ``prototypes.landmarks.crop_landmarks``), so
        that the prototypes land on its features (a tilted head, a wide face); without them
        the face is taken to have its category's mean shape."""
        face = np.asarray(face)
        side = face.shape[0]
        frame = self._frame(side, int(source))
        own = self.prototypes.shape[int(source)]
        if points is not None and np.isfinite(points).all():
            into = fields.displacement(own, points, side)
            frame = {k: _warp_stack(v, into) for k, v in frame.items()}
            frame["valid"] = fields.fold_free(into)
            frame["face"] = frame["face"] / frame["face"].sum()
            own = np.asarray(points, np.float32)
        photo = face.astype(np.float32) / 255.0
        luma, chroma = fields.split_luma(photo)
        parts = fields.bands(luma, _sigmas(side))
        s = self.strengths.scaled(float(strength))
        if s.greying:  # where this photo's hair is (none found: nothing greys)
            frame = dict(frame, hair=hair_mask(photo, own))
        if self.bank is not None and s.real_texture:
            frame = dict(frame, real=self._real_detail(luma, own, side))
        out = []
        for t in targets:
            t = int(t)
            if t == source:
                out.append(face.copy())
                continue
            aged = self._one(parts, chroma, frame, own, int(source), t, s)
            if "valid" in frame:  # where the prototypes' fields could not follow the landmarks
                valid = frame["valid"][..., None]
                aged = valid * aged + (1 - valid) * photo
            out.append(_to_uint8(aged))
        return np.stack(out)

    def _real_detail(self, luma: np.ndarray, own: np.ndarray, side: int) -> dict:
        """What adding a real older face's detail needs: this face's skin mask, low-pass light
        and texture layout, and the way from the bank's frame onto its landmarks."""
        into = fields.displacement(self.prototypes.reference_shape, own, side)
        mask = fields.skin_mask(own, side, EYES) * fields.fold_free(into)
        light = np.maximum(fields.local_mean(luma, BAND_SIGMAS[3] * side / IMAGE_SIDE), 0.2)
        return {"mask": mask, "light": light,
                "layout": layout(np.stack(relative_bands(luma, side)), mask), "into": into}

    def _add_real_detail(self, new: list, real: dict, source: int, target: int,
                         s: PrototypeStrengths) -> None:
        """Blend the detail of the bank's face of ``target`` nearest this one over ``new``'s
        finest bands, on the skin, by the schedule's step from ``source`` to ``target``."""
        weight = s.real_texture * max(REAL_TEXTURE[target] - REAL_TEXTURE[source], 0.0)
        detail = self.bank.pick(target, real["layout"]) if weight > 0 else None
        if detail is None:
            return
        side = len(real["mask"])
        w = np.clip(weight * real["mask"], 0.0, 1.0)
        for k, share in enumerate(REAL_BANDS):
            if share:
                theirs = fields.warp(fields.resize(detail[k], side), real["into"]) * real["light"]
                new[k] = new[k] * (1.0 - REPLACE * share * w) + share * w * theirs

    def _one(self, parts, chroma, frame, own, source: int, target: int,
             s: PrototypeStrengths):
        if s.per_target:
            s = s.scaled(float(s.per_target[target]))
        # children's averages (pale, large-eyed, bright photos) carry more than age: their
        # colour steps are scaled down, from a child as towards one
        colour_scale = 1.0 if target > source and source > 0 else s.younger
        new = []
        for k, band in enumerate(parts[:-1]):
            ratio = np.clip((frame["magnitude"][target, k] / frame["magnitude"][source, k])
                            ** s.texture, *RATIO_RANGE)
            if k == 0:
                ratio = np.minimum(ratio, FINEST_CAP)
            elif k == len(parts) - 2:  # the face's large shading: a change of light, not of skin
                ratio = np.clip(ratio, 1.0 / COARSEST_CAP, COARSEST_CAP)
            new.append(band * ratio + s.folds * FOLD_WEIGHTS[k] * (frame["bands"][target, k]
                                                                   - frame["bands"][source, k]))
        if "real" in frame and target > source:
            self._add_real_detail(new, frame["real"], source, target, s)
        shading = frame["bands"][target, -1] - frame["bands"][source, -1]
        shading = shading - (1.0 - s.brightness) * np.sum(shading * frame["face"])
        # relative to the prototype's own light, so that a dark face is shaded as much as a
        # light one in proportion, not blackened
        relative = shading / np.maximum(frame["bands"][source, -1], 0.35)
        low = parts[-1] * (1.0 + np.clip(s.colour * colour_scale * relative * frame["head"],
                                         LIGHT_RANGE[0] - 1.0, LIGHT_RANGE[1] - 1.0))
        # chroma follows the light, so that darker skin is not redder (a colour's saturation
        # is its chroma over its light)
        light = np.clip(np.maximum(low, 0.02) / np.maximum(parts[-1], 0.02), *LIGHT_RANGE)
        saturation = (frame["colour"][target] / frame["colour"][source]) ** (
            s.saturation * colour_scale * frame["head"])
        # aging takes colour away (grey hair, paler skin), never adds it; a younger face gains
        # a little at most
        saturation = np.clip(saturation, *(OLDER_SATURATION if target > source
                                           else YOUNGER_SATURATION))
        saturation = light * saturation
        image = (low + sum(new))[..., None] + chroma * saturation[..., None]
        if s.greying and target > source:
            image = grey_hair(image, frame["hair"],
                              s.greying * max(GREYING[target] - GREYING[source], 0.0))
        if s.shape:
            points = self.prototypes.shape
            moved = own + s.shape * (points[target] - points[source])
            # the move stays on the face (a smooth falloff: the background and the crop's edge
            # stay still) and is scaled back where the mesh would fold; cubic, not bilinear
            field = fields.displacement(own, moved, len(image)) * frame["warp_mask"][..., None]
            image = fields.warp(image, fields.folding_safe(field, MIN_AREA, MAX_SHIFT), order=3)
        return image

    def _frame(self, side: int, source: int) -> dict:
        """The prototypes of every category in ``source``'s mean shape at ``side`` px: their
        luma bands, band magnitudes and chroma magnitudes."""
        key = (side, source)
        if key in self._frames:
            self._frames.move_to_end(key)
            return self._frames[key]
        p = self.prototypes
        into = fields.displacement(p.reference_shape, p.shape[source], side)
        bands, magnitude, colour = [], [], []
        for a in range(p.num_ages):
            image = fields.warp(fields.resize(p.image[a], side), into)
            bands.append(np.stack(fields.bands(fields.split_luma(image)[0], _sigmas(side))))
            magnitude.append(np.stack([fields.warp(fields.resize(m, side), into)
                                       for m in p.band_magnitude[a]]))
            colour.append(fields.warp(fields.resize(p.colour_magnitude[a], side), into))
        tiny = 1e-4
        frame = {"bands": np.stack(bands), "magnitude": np.maximum(np.stack(magnitude), tiny),
                 "colour": np.maximum(np.stack(colour), tiny),
                 "face": _face_weights(p.shape[source], side),
                 "warp_mask": _warp_mask(p.shape[source], side),
                 "head": _head_mask(p.shape[source], side)}
        self._frames[key] = frame
        if len(self._frames) > self._keep:
            self._frames.popitem(last=False)
        return frame


def _warp_stack(field: np.ndarray, into: np.ndarray) -> np.ndarray:
    """Each (side, side) field of a stack (..., side, side) warped by ``into``."""
    flat = field.reshape(-1, *field.shape[-2:])
    return np.stack([fields.warp(f, into) for f in flat]).reshape(field.shape)


def _face_weights(points: np.ndarray, side: int) -> np.ndarray:
    """(side, side) weights summing to 1 over the face: a Gaussian over the landmarks' spread
    (the skin whose overall brightness is the photo's lighting more than the person's age)."""
    centre, spread = points.mean(axis=0), points.std(axis=0)
    t = (np.arange(side) + 0.5) / side
    xx, yy = np.meshgrid(t, t)
    w = np.exp(-0.5 * (((xx - centre[0]) / spread[0]) ** 2 + ((yy - centre[1]) / spread[1]) ** 2))
    return (w / w.sum()).astype(np.float32)


def _head_mask(points: np.ndarray, side: int) -> np.ndarray:
    """(side, side) in [0, 1]: 1 over the face and the hair above and beside it, fading to 0
    towards the background, where a difference of averages is the photos', not the age's."""
    centre, spread = points.mean(axis=0), points.std(axis=0)
    t = (np.arange(side) + 0.5) / side
    xx, yy = np.meshgrid(t, t)
    up = yy < centre[1]
    ry = np.where(up, 3.2, 2.2) * spread[1]  # the hair reaches higher than the chin goes low
    r = np.sqrt(((xx - centre[0]) / (2.0 * spread[0])) ** 2 + ((yy - centre[1]) / ry) ** 2)
    return np.clip(1.6 - r, 0.0, 1.0).astype(np.float32)


def _warp_mask(points: np.ndarray, side: int) -> np.ndarray:
    """(side, side) in [0, 1]: 1 over the face's landmarks, falling smoothly to 0 at about a
    third of the face's width outside them (hair, ears, neck and background keep still)."""
    hull = fields.face_hull(points, side)
    return np.clip(fields.local_mean((hull > 0.5).astype(np.float32), side / 12.0) * 2.0,
                   0.0, 1.0).astype(np.float32)


def _sigmas(side: int) -> tuple[float, ...]:
    return tuple(sigma * side / IMAGE_SIDE for sigma in BAND_SIGMAS)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
