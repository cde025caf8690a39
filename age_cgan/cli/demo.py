"""``python demo.py --data PATH``: the whole pipeline, briefly, in one command.

Trains stages 1, 2 and 3 for a few steps in ``logs/demo`` and ages the bundled public-domain
portrait (``age_cgan.examples.PORTRAIT``, package data) with the result. Short by default so
that it finishes on a laptop CPU in minutes; the faces only look like faces after real training
(see the README). ``DESCRIPTION`` is what ``--help`` prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from age_cgan.cli import HelpFormatter, add_verbose, infer, train
from age_cgan.examples import PORTRAIT

DESCRIPTION = (
    "The whole pipeline, briefly, in one command: train each stage for a few steps in a run "
    "folder, then age a photo with the result as infer.py does. Age-cGAN has four stages: 1 = "
    "the conditional GAN, 2 = the encoder, fr = the face recogniser, 3 = identity-preserving "
    "fine-tuning of the encoder. The demo trains 1, 2 and 3 (train.py --stage all); for stage 3 "
    "it builds the face recogniser --fr-weights names instead of training stage fr, which needs "
    "dlib descriptors beside the faces (train.py --recipe lite trains all four). Short by "
    "default, so that it finishes on a laptop CPU in minutes; the faces only look like faces "
    "after real training (see the README).")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="demo.py", description=DESCRIPTION,
                                formatter_class=HelpFormatter)
    p.add_argument("--data", required=True,
                   help="UTKFace folder, wiki.mat / imdb.mat, or a CSV of path,age (make a 64 px "
                   "UTKFace folder from the download with: python -m age_cgan.data prepare "
                   "UTKFACE_DIR OUT_DIR)")
    p.add_argument("--run", default="logs/demo", help="run folder")
    p.add_argument("--steps", type=int, default=20, help="steps per stage")
    p.add_argument("--batch-size", type=int, default=16, help="faces per step")
    p.add_argument("--photo", default=str(PORTRAIT), help="photo to age (default: the bundled "
                   "public-domain portrait)")
    p.add_argument("--fr-weights", default="none",
                   help="the face recogniser stage 3 uses: none = an untrained one (works "
                   "offline), imagenet = ImageNet backbone weights (a download), or a PATH to "
                   "an InceptionResNetV2 no-top weights file")
    add_verbose(p)
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
