"""Cross-age verification: does aging the younger photo of a pair help recognise the person?

    python benchmarks/bench_cross_age.py [--model DIR | --run DIR] [--pairs 400] [--method network]

On CACD-VS pairs (../shared/data/cacdvs64: celebrities photographed years apart, same or
different person), the model's age estimator guesses each photo's category; for each pair whose
photos fall in different categories, the younger one is aged to the older one's category by the
method, and dlib's verifier (an independent judge) compares it with the older photo. It prints
how many same-person pairs dlib accepts (distance < 0.6) with the young photo unaged and aged,
the mean distance, and the same for different-person pairs (whose acceptance must not rise).
Needs the judges: pip install "age-cgan[eval]". Not a test: a measurement with its command.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PAIRS = REPO.parent / "shared" / "data" / "cacdvs64"


def parser() -> argparse.ArgumentParser:
    from age_cgan.helpformat import DocstringHelpFormatter

    p = argparse.ArgumentParser(prog="benchmarks/bench_cross_age.py", description=__doc__,
                                formatter_class=DocstringHelpFormatter)
    p.add_argument("--model", help="a packaged model folder (default: the shipped one)")
    p.add_argument("--run", help="a run folder instead of a packaged model")
    p.add_argument("--pairs", type=int, default=400, help="pairs read (same and different "
                   "alike, in pairs.csv's order of folds)")
    p.add_argument("--method", default="network", help="the per-photo method that ages")
    p.add_argument("--strength", type=float, default=None, help="the method's strength "
                   "(default: the model's)")
    p.add_argument("--data", type=Path, default=PAIRS, help="the CACD-VS folder (pairs.csv, "
                   "images/)")
    return p


def read_pairs(folder: Path, limit: int):
    with open(folder / "pairs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    rng = np.random.default_rng(0)
    rows = [rows[i] for i in np.sort(rng.permutation(len(rows))[:limit])]

    def load(name):
        return np.asarray(Image.open(folder / "images" / name).convert("RGB"), np.uint8)

    a = np.stack([load(r["image_0"]) for r in rows])
    b = np.stack([load(r["image_1"]) for r in rows])
    return a, b, np.array([int(r["same_identity"]) for r in rows])


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from age_cgan.aging import AgingModels
    from age_cgan.judges import FaceVerifier, descriptor_distances
    from age_cgan.pretrained import verified_run

    models = AgingModels.from_run(args.run or verified_run(args.model))
    a, b, same = read_pairs(args.data, args.pairs)
    if a.shape[1] != models.image_size:
        raise SystemExit(f"the pairs are {a.shape[1]} px, the model reads {models.image_size}")
    start = time.perf_counter()
    cat_a, _, _ = models.estimate_sources(a)
    cat_b, _, _ = models.estimate_sources(b)
    differ = np.flatnonzero(cat_a != cat_b)
    young_first = cat_a[differ] < cat_b[differ]
    young = np.where(young_first[:, None, None, None], a[differ], b[differ])
    old = np.where(young_first[:, None, None, None], b[differ], a[differ])
    y_cat = np.minimum(cat_a[differ], cat_b[differ])
    o_cat = np.maximum(cat_a[differ], cat_b[differ])
    strength = args.strength if args.strength is not None else \
        models.default_strength(args.method)
    aged = np.stack([models.age_faces(young[i:i + 1], y_cat[i:i + 1], args.method,
                                      categories=[int(o_cat[i])], strength=strength,
                                      progress=False)[0, 0] for i in range(len(differ))])
    verifier = FaceVerifier()
    d_old = verifier.descriptors(old, True, "dlib (older photos)")
    d_young = verifier.descriptors(young, True, "dlib (younger photos)")
    d_aged = verifier.descriptors(aged, True, "dlib (younger photos, aged)")
    unaged = descriptor_distances(d_young, d_old)
    aged_d = descriptor_distances(d_aged, d_old)
    s = same[differ].astype(bool)
    report = {"pairs_read": int(len(same)), "pairs_in_different_categories": int(len(differ)),
              "method": args.method, "strength": strength,
              "gap_in_categories_mean": float(np.mean(o_cat - y_cat)), "seconds":
              round(time.perf_counter() - start, 1)}
    for name, mask in (("same_person", s), ("different_people", ~s)):
        report[name] = {
            "pairs": int(mask.sum()),
            "accepted_unaged": float(np.mean(unaged[mask] < verifier.threshold)),
            "accepted_aged": float(np.mean(aged_d[mask] < verifier.threshold)),
            "distance_unaged": float(np.mean(unaged[mask])),
            "distance_aged": float(np.mean(aged_d[mask])),
        }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
