"""``python -m age_cgan.data PATH``: prepare (or reload) a face source and print its summary.

``python -m age_cgan.data prepare UTKFACE_DIR OUT_DIR [--size 64]``: make the folder the training
commands read from the public UTKFace download (``age_cgan.data.prepare``).
"""

from __future__ import annotations

import argparse
import sys

from age_cgan.errors import AgeCganError, python_words
from age_cgan.helpformat import HelpFormatter

PROG = "python -m age_cgan.data"


def flag_words(part: dict) -> str:
    """A library setting as this command line's flag (``image_size`` -> ``--image-size``)."""
    if "setting" not in part:
        return python_words(part)
    option = "--" + part["setting"].replace("_", "-")
    return option if part["value"] in (None, True) else f"{option} {part['value']}"


def _message(error: BaseException) -> str:
    return error.words(flag_words) if isinstance(error, AgeCganError) else str(error)


def parser() -> argparse.ArgumentParser:
    """The summary command: decode a source into the cache and print what it holds."""
    p = argparse.ArgumentParser(
        prog=PROG, formatter_class=HelpFormatter,
        usage=f"{PROG} prepare UTKFACE_DIR OUT_DIR [--size 64] [--descriptors] ...\n"
        f"       {PROG} [options] SOURCE",
        description=f"Two commands. {PROG} prepare UTKFACE_DIR OUT_DIR makes the folder the "
        "training commands read (train.py --data OUT_DIR) from the UTKFace download: see "
        f"{PROG} prepare --help. {PROG} SOURCE decodes a face source once into the cache and "
        "prints what it holds (faces per age category, the train/test split).")
    p.add_argument("source", metavar="SOURCE", help="wiki.mat / imdb.mat, a UTKFace folder, a "
                   "CSV (path,age[,identity]), or a folder holding one of them (a folder that "
                   "is really named 'prepare': give it as ./prepare)")
    p.add_argument("--image-size", type=int, default=64, help="square face side in pixels")
    p.add_argument("--age-bins", default=None,
                   help="age categories, e.g. '0-18,19-29,60+' (default: the paper's six)")
    p.add_argument("--cache-dir", default=None,
                   help="cache folder (default: $AGE_CGAN_CACHE or ~/.cache/age_cgan)")
    p.add_argument("--no-cache", action="store_true", help="turn off the cache: decode the faces "
                   "again and write no cache file")
    p.add_argument("--test-fraction", type=float, default=0.1,
                   help="share of the faces held out for testing, as train.py --test-fraction")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
    p.add_argument("--workers", type=int, default=None,
                   help="decoding threads (default: one per CPU core)")
    p.add_argument("--quiet", action="store_true", help="turn off the progress bar")
    return p


def prepare_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"{PROG} prepare", formatter_class=HelpFormatter,
        description="Make the folder the training commands read (train.py --data OUT_DIR) from "
        "the public UTKFace download (\"Aligned&Cropped Faces\": 200x200 JPEGs named "
        "AGE_GENDER_RACE_DATETIME.jpg.chip.jpg; UTKFace.tar.gz unpacks to UTKFace/): every "
        "usable face resized to --size px and saved as a JPEG under its own name. Malformed "
        "names and unreadable files are skipped and counted; an existing output is not "
        "overwritten without --overwrite.")
    p.add_argument("utkface_dir", metavar="UTKFACE_DIR",
                   help="the unpacked download: the folder of .jpg.chip.jpg files, or a folder "
                   "holding it (e.g. the one UTKFace.tar.gz was unpacked in)")
    p.add_argument("out_dir", metavar="OUT_DIR",
                   help="the folder to write (made if missing; must be empty without "
                   "--overwrite)")
    p.add_argument("--size", type=int, default=64,
                   help="face side in pixels (the training commands' --image-size)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a folder that already holds files: faces of the same names "
                   "are replaced, other files are left, an old dlib_descriptors.npz is removed")
    p.add_argument("--descriptors", action="store_true",
                   help="also write dlib_descriptors.npz, the teacher train.py --stage fr (and "
                   "--recipe lite) distils: dlib's descriptor of every face (pip install "
                   "\"age-cgan[eval]\"; ~7-11 faces/s, about an hour for all of UTKFace on a "
                   "2-core CPU)")
    p.add_argument("--workers", type=int, default=None,
                   help="resizing threads (default: one per CPU core)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="turn off the progress bars")
    return p


def prepare_main(argv) -> int:
    from age_cgan.data.prepare import prepare_utkface

    args = prepare_parser().parse_args(argv)
    try:
        report = prepare_utkface(args.utkface_dir, args.out_dir, size=args.size,
                                 overwrite=args.overwrite, workers=args.workers,
                                 progress=args.progress, descriptors=args.descriptors)
    except (OSError, ValueError) as error:  # PrepareError, JudgeUnavailable (ImportError)
        print(f"{PROG} prepare: error: {_message(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG} prepare: interrupted; the faces written so far are whole. Run the same "
              "command with --overwrite to finish", file=sys.stderr)
        return 130
    print(report.format())
    if not report.written:
        print(f"{PROG} prepare: error: no face could be written", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["prepare"]:
        return prepare_main(argv[1:])
    args = parser().parse_args(argv)
    from age_cgan.data.dataset import load_dataset

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
        print(f"error: {_message(error)}", file=sys.stderr)
        return 2
    print(dataset.summary.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
