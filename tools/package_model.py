"""Package a trained run as a shipped model folder (see age_cgan/pretrained/__init__.py).

    python tools/package_model.py ~/runs/lite --leave-out face_recognizer --out age_cgan/pretrained/lite

Copies the networks inference needs (encoder, generator, age estimator, aging network, face
recogniser; not the discriminators), the run's settings without machine-local keys, plus the per-photo method
infer.py should use by default, then writes SHA256SUMS over them. The model card
(MODEL_CARD.md) is written by hand from the evaluation and is not checksummed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from age_cgan.aging import METHODS
from age_cgan.files import WriteFailed
from age_cgan.helpformat import DocstringHelpFormatter
from age_cgan.pretrained import CHECKSUMS, NETWORKS, REQUIRED, package_run


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tools/package_model.py", description=__doc__,
                                formatter_class=DocstringHelpFormatter)
    p.add_argument("run", type=Path, help="a trained run folder (all stages done)")
    p.add_argument("--out", type=Path, default=Path("age_cgan/pretrained/lite"),
                   help="the model folder to write")
    p.add_argument("--method", default="network", choices=METHODS,
                   help="the per-photo method infer.py and the page use by default with this "
                   "model")
    p.add_argument("--strength", type=float, default=1.0,
                   help="that method's strength (network / difference; default: 1)")
    p.add_argument("--leave-out", nargs="*", default=(), choices=NETWORKS[len(REQUIRED):],
                   metavar="NETWORK", help="networks of the run not to package (e.g. "
                   "face_recognizer, to stay within the 25 MB the shipped model may hold)")
    p.add_argument("--overwrite", action="store_true", help="write into --out although it "
                   "holds files and is not a packaged model folder (default: refuse, before "
                   "any copy; a packaged model folder is updated in place)")
    return p


def out_problem(out: Path, overwrite: bool) -> str | None:
    """Why --out must not be written: a file, or a folder with other files than a packaged
    model's (no SHA256SUMS), unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file: name a folder"
    if overwrite or not out.is_dir() or (out / CHECKSUMS).is_file() or not any(out.iterdir()):
        return None
    return (f"--out {out} holds files and is not a packaged model folder (no {CHECKSUMS}): "
            "choose an empty or new folder, or pass --overwrite to write into it")


def main(argv=None):
    args = parser().parse_args(argv)
    problem = out_problem(args.out, args.overwrite)
    if problem:
        sys.exit(f"package_model.py: error: {problem}")
    try:
        folder = package_run(args.run, args.out, args.method, args.strength, args.leave_out)
    except WriteFailed as error:  # a full disk, ...: one line naming the file
        sys.exit(f"package_model.py: error: {error}")
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(f"packaged {args.run} -> {folder} ({size / 1e6:.1f} MB; {CHECKSUMS} verified)")


if __name__ == "__main__":
    main()
