"""Skin detail of real older faces, moved onto a photo aged to 40+: wrinkles with real texture.

Averages of hundreds of faces keep where folds are but blur what they look like, so a face aged
by the prototypes alone keeps young, smooth skin with soft shading (a viewer's first cue). This
bank holds, for each category from 40-49 up and each gender, the fine detail of a few real
training faces (the sharpest frontal ones): the luma bands at ~1, 2 and 4 px (``BANDS`` of the
prototypes' Gaussian-difference stack at 128 px) divided by the face's own low-pass light, so
that they carry texture and not skin tone, warped into the prototypes' reference shape. No
colour and no light is stored: the detail alone, float16 at 128 px, in ``textures.npz`` beside
``prototypes.npz`` (the shape in the same frame).

At use (``aging.prototype``), a photo aged from category s to an older t takes the detail of the
bank face whose layout of fine texture (beard, brows, glasses) is nearest its own, warped onto its
own landmarks, on its skin only (the eyes, brows, lips and nostrils are left as they are), blended
over its own detail by ``REAL_TEXTURE`` of t less that of s.

``python -m age_cgan.prototypes build DATA OUT.npz`` writes the bank beside OUT (``build_beside``)
when DATA is a prepared folder (``manifest.csv`` with the split), in ~15 s on 2 cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from age_cgan.prototypes import fields
from age_cgan.prototypes.store import BAND_SIGMAS, IMAGE_SIDE

#: The bands of ``BAND_SIGMAS`` stored (pores and grain, fine wrinkles, creases).
BANDS = 3
#: Bank faces kept per (category, gender), and the candidates looked at to choose them.
PER_GROUP = 8
CANDIDATES = 200
#: The light a band is divided by never goes below this (shadows, beards and hair would make
#: huge relative detail), and the relative detail stays within +-DETAIL_CAP.
LIGHT_FLOOR = 0.2
DETAIL_CAP = 0.3
#: Candidates are ranked by the detail on their skin; the sharpest SKIP_SHARPEST of them are
#: passed over (watermarks, text and sensor noise rank there), the next PER_GROUP kept.
SKIP_SHARPEST = 0.25
#: A candidate is passed over where the ring round its eyes holds this many times its skin's
#: median fine edge (glasses' frames), or its skin's brightest 2% this many times (text).
GLASSES_RATIO = 1.5
BURST_RATIO = 4.5
#: The eyes' ellipses are this many times the eyes' size where no detail is moved: glasses'
#: frames, which no test finds reliably, and the eyes' own lashes stay out of the bank.
EYES = 3.4
#: UTKFace training faces that the checks above let through and a look at the bank did not:
#: watermark text and glasses' frames over the skin.
LOOKED_AT_AND_LEFT_OUT = frozenset({
    "42_0_0_20170109012239137.jpg.chip.jpg",
    "43_0_0_20170104172942851.jpg.chip.jpg",
    "47_0_3_20170119205128991.jpg.chip.jpg",
    "48_1_1_20170117175130020.jpg.chip.jpg",
    "49_0_0_20170104184256957.jpg.chip.jpg",
    "49_0_0_20170104185744454.jpg.chip.jpg",
    "50_1_0_20170109012444348.jpg.chip.jpg",
    "53_1_0_20170117163713738.jpg.chip.jpg",
    "54_0_3_20170119210231791.jpg.chip.jpg",
    "54_1_0_20170103183727146.jpg.chip.jpg",
    "56_0_0_20170111171747466.jpg.chip.jpg",
    "57_0_0_20170111203532804.jpg.chip.jpg",
    "58_0_0_20170117191947021.jpg.chip.jpg",
    "59_0_0_20170104185548054.jpg.chip.jpg",
    "61_0_1_20170113185419607.jpg.chip.jpg",
    "62_0_3_20170117154850387.jpg.chip.jpg",
    "65_0_0_20170105174716942.jpg.chip.jpg",
    "65_0_3_20170112222321514.jpg.chip.jpg",
    "66_1_0_20170110140814578.jpg.chip.jpg",
    "68_0_0_20170117172618723.jpg.chip.jpg",
    "68_0_2_20170112224243075.jpg.chip.jpg",
    "74_0_0_20170120230055728.jpg.chip.jpg",
    "75_1_0_20170110181540242.jpg.chip.jpg",
    "75_1_0_20170120230326690.jpg.chip.jpg",
    "80_1_0_20170120222314991.jpg.chip.jpg",
    "82_1_0_20170110184132973.jpg.chip.jpg",
    "85_0_2_20170111221734101.jpg.chip.jpg",
    "85_1_0_20170110184040927.jpg.chip.jpg",
})
#: The first category with a bank (40-49: the paper's six categories).
FIRST_CATEGORY = 3
#: The side of the texture-layout descriptor a photo's bank face is chosen by.
LAYOUT_SIDE = 8
FILE = "textures.npz"


def relative_bands(luma: np.ndarray, side: int) -> list[np.ndarray]:
    """The first ``BANDS`` bands of a luma image over its own low-pass light (sigma 4 px at
    128 px), so a dark and a light face give detail of the same scale."""
    sigmas = tuple(s * side / IMAGE_SIDE for s in BAND_SIGMAS)
    parts = fields.bands(luma, sigmas)
    light = np.maximum(fields.local_mean(luma, sigmas[3]), LIGHT_FLOOR)
    return [np.clip(parts[k] / light, -DETAIL_CAP, DETAIL_CAP) for k in range(BANDS)]


def layout(detail: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(B, S, S) relative detail -> a unit vector: the fine texture's local energy on the skin at
    LAYOUT_SIDE x LAYOUT_SIDE (beard, stubble, brows, glasses frames show here)."""
    energy = fields.resize(fields.local_mean(np.abs(detail[:2]).sum(0) * mask,
                                             detail.shape[-1] / 16), LAYOUT_SIDE).ravel()
    energy = energy - energy.mean()
    return (energy / (np.linalg.norm(energy) + 1e-6)).astype(np.float32)


def build(data, out, reference_shape: np.ndarray, bins, seed: int = 0,
          progress: bool = True) -> Path:
    """Choose and store the bank from the 128 px training faces of ``data`` (a prepared folder:
    ``manifest.csv`` and ``images/``); ``reference_shape`` (68, 2): the prototypes' frame."""
    import csv

    from PIL import Image
    from tqdm.auto import tqdm

    from age_cgan.prototypes.landmarks import landmarks

    data = Path(data)
    with open(data / "manifest.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "train"
                and r.get("is_gray", "0") == "0" and r.get("dup_label_conflict", "0") == "0"]
    rng = np.random.default_rng([seed, 41])
    detail, layouts, groups, names = [], [], [], []
    num_ages = bins.num_ages
    todo = [(c, g) for c in range(FIRST_CATEGORY, num_ages) for g in ("0", "1")]
    for category, gender in tqdm(todo, desc="texture bank", disable=not progress):
        pool = [r for r in rows if r["gender"] == gender and bins.category(float(r["age"])) ==
                category and r["filename"] not in LOOKED_AT_AND_LEFT_OUT]
        scored = []
        for row in [pool[i] for i in rng.permutation(len(pool))[:CANDIDATES]]:
            face = np.asarray(Image.open(data / "images" / row["filename"]).convert("RGB"))
            points = landmarks(face)
            if not np.isfinite(points).all() or not _frontal(points):
                continue
            luma = fields.split_luma(face.astype(np.float32) / 255.0)[0]
            if _glasses(luma, points):
                continue
            into = fields.displacement(points, reference_shape, IMAGE_SIDE)
            bands = np.stack([fields.warp(b, into) for b in relative_bands(luma, IMAGE_SIDE)])
            mask = fields.skin_mask(reference_shape, IMAGE_SIDE, EYES)
            sharp = float((np.abs(bands[0]) * mask).sum() / mask.sum())
            scored.append((sharp, bands, layout(bands, mask), row["filename"]))
        scored.sort(key=lambda item: -item[0])
        skip = int(len(scored) * SKIP_SHARPEST)
        for _, bands, lay, name in scored[skip:skip + PER_GROUP]:
            names.append(name)
            detail.append(bands)
            layouts.append(lay)
            groups.append((category, int(gender)))
    out = Path(out)
    meta = {"data": data.name, "faces": names, "per_group": PER_GROUP, "bands": BANDS,
            "first_category": FIRST_CATEGORY, "bins": bins.spec, "seed": seed}
    np.savez_compressed(out, detail=np.stack(detail).astype(np.float16),
                        layout=np.stack(layouts), group=np.array(groups, np.int16),
                        meta=np.array(json.dumps(meta)))
    return out


def _glasses(luma: np.ndarray, points: np.ndarray) -> bool:
    """Whether the face seems to wear glasses or carry text: fine edges in a ring round the eyes
    (frames), or in bursts on the skin (watermarks), far above the skin's usual detail."""
    side = luma.shape[0]
    energy = fields.local_mean(np.abs(fields.bands(luma, (1.0, 2.0))[1]), 2.0)
    skin = fields.skin_mask(points, side) > 0.5
    typical = float(np.median(energy[skin])) + 1e-4
    p = np.asarray(points) * side
    yy, xx = np.mgrid[0:side, 0:side]
    ring = np.zeros((side, side), bool)
    for eye in (slice(36, 42), slice(42, 48)):
        centre, width = p[eye].mean(0), np.ptp(p[eye][:, 0])
        r = np.hypot((xx - centre[0]) / width, (yy - centre[1]) / (0.8 * width))
        ring |= (r > 0.75) & (r < 1.25)
    frames = float(np.median(energy[ring])) / typical
    bursts = float(np.percentile(energy[skin], 98)) / typical
    return frames > GLASSES_RATIO or bursts > BURST_RATIO


def _frontal(points: np.ndarray) -> bool:
    """Whether the nose tip sits near the middle of the jaw's ends (a face seen from the front)."""
    left, right, nose = points[0, 0], points[16, 0], points[30, 0]
    return abs((nose - left) / max(right - left, 1e-6) - 0.5) < 0.08


def build_beside(prototypes_path, data, progress: bool = True) -> Path | None:
    """The bank of the 128 px faces of ``data`` written beside ``prototypes_path`` (in the
    prototypes' frame and categories); None where ``data`` has no ``manifest.csv`` to read
    its split and genders from (the method then adds no real detail)."""
    from age_cgan.ages import AgeBins
    from age_cgan.prototypes.store import Prototypes

    if not (Path(data) / "manifest.csv").is_file():
        return None
    prototypes = Prototypes.load(prototypes_path)
    return build(data, Path(prototypes_path).with_name(FILE), prototypes.reference_shape,
                 AgeBins.parse(prototypes.bins), progress=progress)


class TextureBank:
    """The stored bank: ``detail`` (K, BANDS, 128, 128) float32, ``layout`` (K, L), ``group``
    (K, 2) (category, gender)."""

    def __init__(self, path):
        with np.load(path) as f:
            self.detail = f["detail"].astype(np.float32)
            self.layout = f["layout"].astype(np.float32)
            self.group = f["group"].astype(np.int64)
        if self.detail.ndim != 4 or self.detail.shape[1] != BANDS or \
                not np.isfinite(self.detail).all() or np.abs(self.detail).max() > 20:
            raise ValueError(f"{path}: not a texture bank (detail {self.detail.shape}); build "
                             "it again with python -m age_cgan.prototypes textures")

    @classmethod
    def beside(cls, prototypes_path) -> "TextureBank | None":
        """The bank in the prototypes' folder, or None where there is none."""
        if prototypes_path is None:
            return None
        path = Path(prototypes_path).with_name(FILE)
        return cls(path) if path.is_file() else None

    def pick(self, category: int, own_layout: np.ndarray) -> np.ndarray | None:
        """(BANDS, 128, 128) in the reference frame: the bank face of ``category`` whose
        texture layout is nearest ``own_layout``; None where the bank has none."""
        rows = np.flatnonzero(self.group[:, 0] == category)
        if not len(rows):
            return None
        return self.detail[rows[int(np.argmax(self.layout[rows] @ own_layout))]]
