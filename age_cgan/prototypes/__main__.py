"""``python -m age_cgan.prototypes build DATA OUT.npz``: the age prototypes of a face folder."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from age_cgan.errors import python_words
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
                   "names give the race and gender the averages are balanced over) of faces of at least 128 "
                   "px (python -m age_cgan.data prepare UTKFACE_DIR DIR --size 128) with at "
                   "least 15 training faces in every age category; smaller or fewer faces "
                   "are refused before any work")
    b.add_argument("out", help="the file to write, e.g. RUN/prototypes.npz: never inside "
                   "DATA, and an existing file only with --overwrite")
    b.add_argument("--no-textures", action="store_true",
                   help="do not write textures.npz beside OUT (the skin detail of a few real "
                   "older training faces, which the method adds at 40+; written when DATA is a "
                   "prepared folder with a manifest.csv)")
    b.add_argument("--overwrite", action="store_true",
                   help="replace OUT when it exists (default: refuse, before any work)")
    b.add_argument("--age-bins", default=None, help="age categories (default: the paper's six)")
    b.add_argument("--workers", type=int, default=None, help="processes (default: every CPU)")
    b.add_argument("--no-progress", dest="progress", action="store_false",
                   help="turn off the progress bars")
    return p


def out_problem(data, out, overwrite: bool) -> str | None:
    """Why OUT cannot be written (checked before any work), or None: a folder, a file inside
    the data folder (never, even with --overwrite), an existing file without --overwrite."""
    from age_cgan.files import writable_problem

    data, out = Path(data).expanduser().resolve(), Path(out).expanduser()
    folder = data if data.is_dir() else data.parent
    if out.is_dir():
        return (f"OUT {out} is a folder: give the file to write, e.g. "
                f"{out / 'prototypes.npz'}")
    if out.resolve().is_relative_to(folder):
        return (f"OUT {out} is inside the data folder {folder}: write the prototypes "
                "elsewhere, e.g. RUN/prototypes.npz (nothing is ever written into DATA)")
    if out.exists() and not overwrite:
        return f"OUT {out} exists: pass --overwrite to replace it, or choose another OUT"
    bank = out.with_name("textures.npz")
    if bank.exists() and not overwrite and (folder / "manifest.csv").is_file():
        return (f"{bank} exists beside OUT (the texture bank written with the prototypes): "
                "pass --overwrite to replace both, or choose another folder for OUT")
    problem = writable_problem(out)
    return problem and f"cannot write OUT: {problem}"


def _words(part: dict) -> str:
    """A library setting as this command's argument (``data`` is the DATA argument)."""
    if part.get("setting") == "data":
        return "DATA"
    if "setting" in part:
        option = "--" + part["setting"].replace("_", "-")
        return option if part["value"] in (None, True) else f"{option} {part['value']}"
    return python_words(part)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    problem = out_problem(args.data, args.out, args.overwrite) if Path(args.data).exists() \
        else f"DATA {args.data} does not exist"
    if problem:  # one line, before the faces are read
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from age_cgan.data import load_dataset
    from age_cgan.errors import AgeCganError
    from age_cgan.prototypes.build import build_prototypes, check_prototype_faces
    from age_cgan.prototypes.store import IMAGE_SIDE
    from age_cgan.prototypes.textures import build_beside

    start = time.perf_counter()
    try:
        check_prototype_faces(args.data, "data", args.age_bins)
        dataset = load_dataset(args.data, IMAGE_SIDE, args.age_bins, progress=args.progress)
        prototypes = build_prototypes(dataset, workers=args.workers, progress=args.progress)
        path = prototypes.save(args.out)
        bank = None if args.no_textures else build_beside(path, args.data, args.progress)
    except (AgeCganError, ValueError, FileNotFoundError) as error:
        words = error.words(_words) if isinstance(error, AgeCganError) else str(error)
        print(f"error: {words}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{k} {v}" for k, v in prototypes.meta["faces"].items())
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in "
          f"{time.perf_counter() - start:.0f} s: {counts}"
          + (f"; and beside it {bank.name}, the skin detail of older faces" if bank else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
