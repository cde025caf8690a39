"""A blind viewer test: sheets of numbered pairs, a real photo and an aged one, and a scorer.

Each pair holds a real photo of the target category and a photo of someone younger (or older)
aged to it by a method, both through the same crop as ``infer.py`` (``evaluation.photos``), at
``SHEET_SIDE`` px, matched for gender where the labels allow, the real one's side drawn at
random. The key is written apart from the sheets; a viewer who sees only the sheets names the
real photo of each pair (A or B). 50% named right = the aged photos pass for real ones.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from age_cgan.data import resize_faces
from age_cgan.errors import AgeCganError

#: Each face's side on a sheet (px).
SHEET_SIDE = 224
#: Pairs per sheet (rows of two pairs).
PAIRS_PER_SHEET = 10


class ViewerError(AgeCganError, ValueError):
    """Too few photos for the pairs asked, or an answer file that cannot be read."""


def source_categories(target: int, num_ages: int) -> list[int]:
    """The true categories aged photos come from: 19-39 for 50+ (a large step up), 40+ for
    0-18, and otherwise the categories at least two away."""
    if target >= num_ages - 2:
        return [1, 2]
    if target == 0:
        return list(range(3, num_ages))
    return [c for c in range(num_ages) if abs(c - target) >= 2]


def draw_pairs(rows, bins, target: int, pairs: int, seed: int = 0) -> list[tuple]:
    """[(aged row, real row)] ``pairs`` long: sources from ``source_categories``, real photos of
    ``target``, the same gender in each pair where both sides have one; each photo used once.
    Raises ViewerError naming how many photos there are when there are too few."""
    rng = np.random.default_rng([seed, 29])
    category = np.array([bins.category(r.age) for r in rows])
    sources = [rows[i] for i in rng.permutation(np.flatnonzero(
        np.isin(category, source_categories(target, bins.num_ages))))]
    reals = [rows[i] for i in rng.permutation(np.flatnonzero(category == target))]
    if min(len(sources), len(reals)) < pairs:
        raise ViewerError(f"--pairs {pairs}: only {len(reals)} photos of {bins.labels[target]} "
                          f"and {len(sources)} to age to it here; ask for at most "
                          f"{min(len(sources), len(reals))} pairs or use more photos")
    out = []
    for source in sources:
        match = next((r for r in reals if r.gender == source.gender), None)
        if match is None:
            continue
        reals.remove(match)
        out.append((source, match))
        if len(out) == pairs:
            return out
    left = [s for s in sources if s not in {p[0] for p in out}]
    return out + list(zip(left, reals))[:pairs - len(out)]


def sheet(pairs: list[tuple[np.ndarray, np.ndarray]], first: int) -> np.ndarray:
    """uint8 sheet of (left, right) face pairs numbered from ``first``, two pairs a row."""
    from PIL import Image, ImageDraw, ImageFont

    s, gap, head = SHEET_SIDE, 24, 28
    cols = 2
    rows = -(-len(pairs) // cols)
    width = cols * (2 * s + gap) + gap * (cols - 1)
    canvas = Image.new("RGB", (width, rows * (s + head + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=20)
    for k, (a, b) in enumerate(pairs):
        x, y = (k % cols) * (2 * s + 2 * gap), (k // cols) * (s + head + gap)
        draw.text((x, y + 2), f"{first + k}:   A  |  B", fill="black", font=font)
        for j, face in enumerate((a, b)):
            canvas.paste(Image.fromarray(resize_faces(face[None], s)[0]), (x + j * (s + 4), y + head))
    return np.asarray(canvas)


def parse_answers(text: str) -> dict[int, str]:
    """{pair number: "A" or "B"} from lines like ``3: B``, ``3 B`` or ``3. A (the skin)``."""
    answers = {}
    for line in text.splitlines():
        found = re.match(r"\s*(?:pair\s*)?(\d+)\s*[:.)-]?\s*\**\s*([AB])\b", line, re.I)
        if found:
            answers[int(found.group(1))] = found.group(2).upper()
    if not answers:
        raise ViewerError("no answers found: write one line per pair, e.g. '3: B'")
    return answers


def score(key: dict, answers: dict[int, str]) -> dict:
    """How often the viewer named the real photo: {"named_real", "pairs", "rate", "missing"}."""
    real = {int(k): v for k, v in key["real_side"].items()}
    right = sum(answers.get(k) == v for k, v in real.items())
    missing = sorted(set(real) - set(answers))
    return {"named_real": int(right), "pairs": len(real), "rate": right / len(real),
            "missing": missing}


def write_key(path: Path, key: dict) -> None:
    path.write_text(json.dumps(key, indent=1) + "\n")
