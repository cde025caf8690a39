"""``python demo.py --data PATH``: the whole pipeline, briefly, in one command.

Trains every network for a few steps in ``logs/demo`` (the default method's age estimator and
aging network, then Age-cGAN's stages 1, 2 and 3) and ages the bundled public-domain portrait
(``age_cgan.examples.PORTRAIT``, package data) with the result: by the default method, then by
Age-cGAN's. Short by default so that it finishes on a laptop CPU in minutes; the faces only
look like faces after real training (see the README). ``DESCRIPTION`` is what ``--help`` prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from age_cgan.cli import HelpFormatter, add_verbose, infer, train
from age_cgan.examples import PORTRAIT

DESCRIPTION = (
    "The whole pipeline, briefly, in one command: train each network for a few steps in a run "
    "folder, then age a photo with the result as infer.py does, by each method family. First "
    "the aging network's two stages (train.py --stage network): age = the age estimator, "
    "aging = the image-to-image aging network, here without its teacher, the age prototypes "
    "(building them needs dlib's landmarks and hundreds of faces per age: train.py --recipe "
    "lite); the photo aged by it is RUN/aged.png. Then "
    "Age-cGAN, which has four stages: 1 = the conditional GAN, 2 = the encoder, fr = the face "
    "recogniser, 3 = identity-preserving fine-tuning of the encoder. The demo trains 1, 2 and 3 "
    "(train.py --stage age-cgan); for stage 3 it builds the face recogniser --fr-weights names "
    "instead of training stage fr, which needs dlib descriptors beside the faces (train.py "
    "--recipe lite trains them all); the photo aged by its encoder and generator is "
    "RUN/aged_age_cgan.png. Short by default, so that it finishes on a laptop CPU in minutes; "
    "the faces only look like faces after real training (see the README).")
#: (train.py --stage, infer.py --method, the grid's file name in the run folder, the stages'
#: own settings), in order.
PARTS = (("network", "network", "aged.png", ["--aging-pair-weight", "0"]),
         ("age-cgan", "none", "aged_age_cgan.png", []))


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
    p.add_argument("--arch", default="lite", choices=["lite", "tutorial"],
                   help="network sizes: lite = the shipped model's, sized for a CPU; tutorial = "
                   "the book's")
    p.add_argument("--image-size", type=int, default=64, help="face size in pixels, a "
                   "multiple of 16")
    p.add_argument("--photo", default=str(PORTRAIT), help="photo to age (default: the bundled "
                   "public-domain portrait)")
    p.add_argument("--fr-weights", default="none",
                   help="the face recogniser stage 3 uses: none = an untrained one (works "
                   "offline), imagenet = ImageNet backbone weights (a download, --arch "
                   "tutorial), or a PATH to an InceptionResNetV2 no-top weights file")
    add_verbose(p)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    common = ["--data", args.data, "--run", args.run, "--steps", str(args.steps),
              "--batch-size", str(args.batch_size), "--arch", args.arch, "--image-size",
              str(args.image_size), "--fr-weights", args.fr_weights, "--resume",
              "--log-every", "5", "--sample-every", str(args.steps)]
    for stage, _, _, own in PARTS:
        status = train.main(["--stage", stage, *common, *own])
        if status:
            return status
    for _, method, name, _ in PARTS:
        out = Path(args.run) / name
        status = infer.main([args.photo, "--run", args.run, "--out", str(out), "--method", method])
        if status:
            return status
        print(f"demo: wrote {out} (--method {method})")
    print(f"demo: watch the run with `tensorboard --logdir {Path(args.run).parent}`")
    return 0


def console() -> None:
    """The console script and the top-level script: backend log noise filtered unless
    --verbose (see age_cgan/cli/quiet.py)."""
    from age_cgan.cli.quiet import run

    run(main)


if __name__ == "__main__":
    console()
