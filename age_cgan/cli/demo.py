"""``python demo.py --data PATH``: the whole pipeline, briefly, in one command.

Trains the three stages for a few steps in ``logs/demo`` and ages the bundled public-domain
portrait (``age_cgan.examples.PORTRAIT``, package data) with the result. Short by default so
that it finishes on a laptop CPU in minutes; the faces only look like faces after real training
(see the README).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from age_cgan.cli import infer, train
from age_cgan.examples import PORTRAIT


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="demo.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True,
                   help="UTKFace folder, wiki.mat / imdb.mat, or a CSV of path,age")
    p.add_argument("--run", default="logs/demo", help="run folder (default: logs/demo)")
    p.add_argument("--steps", type=int, default=20, help="steps per stage (default: 20)")
    p.add_argument("--batch-size", type=int, default=16, help="faces per step (default: 16)")
    p.add_argument("--photo", default=str(PORTRAIT), help="photo to age (default: the bundled "
                   "public-domain portrait)")
    p.add_argument("--fr-weights", default="none",
                   help="FR for stage 3: none (default, works offline), imagenet, or a PATH")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    status = train.main([
        "--stage", "all", "--data", args.data, "--run", args.run, "--steps", str(args.steps),
        "--batch-size", str(args.batch_size), "--fr-weights", args.fr_weights, "--resume",
        "--log-every", "5", "--sample-every", str(args.steps),
    ])
    if status:
        return status
    out = Path(args.run) / "aged.png"
    status = infer.main([args.photo, "--run", args.run, "--out", str(out)])
    if status == 0:
        print(f"demo: wrote {out}; watch the run with `tensorboard --logdir {Path(args.run).parent}`")
    return status


def console() -> None:
    """The console script and the top-level script: backend log noise filtered unless
    --verbose (see age_cgan/cli/quiet.py)."""
    from age_cgan.cli.quiet import run

    run(main)


if __name__ == "__main__":
    console()
