"""``python -m age_cgan.prototypes build DATA OUT.npz``: the age prototypes of a face folder."""

from __future__ import annotations

import argparse
import sys
import time

from age_cgan.helpformat import HelpFormatter


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m age_cgan.prototypes",
        description="Build the age prototypes the 'prototype' aging method uses: per age "
        "category, race- and gender-balanced averages of the training faces' shape (dlib's 68 "
        "landmarks), colour and texture. Needs the [eval] extra (dlib's landmark model) at "
        "build time only. train.py --recipe lite runs this too.",
        formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="build")
    b = sub.add_parser("build", formatter_class=HelpFormatter,
                       help="build OUT.npz from the training split of DATA",
                       description="Build OUT.npz from the training split of DATA (the test "
                       "split and the validation faces left out, as training leaves them).")
    b.add_argument("data", help="a face folder as train.py --data reads it, UTKFace-named (the "
                   "names give the race and gender the averages are balanced over); 128 px "
                   "faces (prepare --size 128) give the sharpest prototypes")
    b.add_argument("out", help="the file to write, e.g. RUN/prototypes.npz")
    b.add_argument("--age-bins", default=None, help="age categories (default: the paper's six)")
    b.add_argument("--workers", type=int, default=None, help="processes (default: every CPU)")
    b.add_argument("--no-progress", dest="progress", action="store_false",
                   help="turn off the progress bars")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    from age_cgan.data import load_dataset
    from age_cgan.errors import AgeCganError
    from age_cgan.prototypes.build import build_prototypes
    from age_cgan.prototypes.store import IMAGE_SIDE

    start = time.perf_counter()
    try:
        dataset = load_dataset(args.data, IMAGE_SIDE, args.age_bins, progress=args.progress)
        prototypes = build_prototypes(dataset, workers=args.workers, progress=args.progress)
        path = prototypes.save(args.out)
    except (AgeCganError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{k} {v}" for k, v in prototypes.meta["faces"].items())
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in "
          f"{time.perf_counter() - start:.0f} s: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
