"""``python -m age_cgan.data PATH``: prepare (or reload) a face source and print its summary."""

from __future__ import annotations

import argparse
import sys

from age_cgan.data.dataset import load_dataset
from age_cgan.errors import AgeCganError, python_words


def flag_words(part: dict) -> str:
    """A library setting as this command line's flag (``image_size`` -> ``--image-size``)."""
    if "setting" not in part:
        return python_words(part)
    option = "--" + part["setting"].replace("_", "-")
    return option if part["value"] in (None, True) else f"{option} {part['value']}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m age_cgan.data",
        description="Decode a face source once into the cache and print what it holds.",
    )
    parser.add_argument("source", help="wiki.mat / imdb.mat, a UTKFace folder, or a CSV "
                        "(path,age[,identity]), or a folder holding one of them")
    parser.add_argument("--image-size", type=int, default=64, help="square face side in pixels")
    parser.add_argument("--age-bins", default=None,
                        help="age categories, e.g. '0-18,19-29,60+' (default: the paper's six)")
    parser.add_argument("--cache-dir", default=None,
                        help="cache folder (default: $AGE_CGAN_CACHE or ~/.cache/age_cgan)")
    parser.add_argument("--no-cache", action="store_true", help="decode without caching")
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
    parser.add_argument("--workers", type=int, default=None, help="decoding threads")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        dataset = load_dataset(
            args.source,
            image_size=args.image_size,
            age_bins=args.age_bins,
            cache_dir=False if args.no_cache else args.cache_dir,
            test_fraction=args.test_fraction,
            seed=args.seed,
            workers=args.workers,
            progress=not args.quiet,
        )
    except (OSError, ValueError) as error:
        message = error.words(flag_words) if isinstance(error, AgeCganError) else str(error)
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(dataset.summary.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
