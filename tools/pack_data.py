#!/usr/bin/env python3
"""Pack a face folder into one .npz for the GPU machine, and unpack it there.

A batch GPU machine may have no copy of the data and take little with the project (64 MiB for
the tree, the Keras wheels and the data together is what this is sized for; tools/README.md). utkface64's 22,182 JPEGs are 59 MB as
files, its decoded uint8 array 272 MB, so the pack keeps the JPEG files' own bytes, unchanged,
in one uint8 buffer with offsets (no object arrays, no pickle), compressed by
``np.savez_compressed`` (deflate saves ~9%: the files' JPEG tables repeat), and the
folder's ``dlib_descriptors.npz`` rows aligned to the files, as float16 by default (the
largest change is 2.4e-4 on components of about 0.1; FR distillation's teacher).

Measured on a prepared UTKFace folder (utkface64): 59.3 MB of JPEG files and 11.4 MB of descriptors pack
to 59.2 MB (56.5 MiB) in 3 s, which leaves room for the Keras wheels (3.1 MiB) and the tree.

Unpacking rebuilds the folder as it was (``DEST/images/<name>`` with the original bytes, and
``DEST/dlib_descriptors.npz``: sorted ``filenames`` and float32 ``descriptors``), so the GPU job
runs the ordinary ``train.py --data DEST``: the same reader, decode, split and teacher lookup
as here, no special code path. Unpacking needs only numpy.

    python tools/pack_data.py ~/data/utkface64                    # -> .gpu-data/utkface64.npz
    python tools/pack_data.py --unpack .gpu-data/utkface64.npz /tmp/utkface64

Packing also crops a photo's face with ``age_cgan.faces`` (dlib's detector, here) into
``.gpu-data/<photo>_face<size>.png``, so that a machine without dlib can still age it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zlib
from pathlib import Path

import numpy as np

FORMAT = 1
TEACHER_FILE = "dlib_descriptors.npz"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
#: What a batch machine takes with the project in all (tree, wheels, data), as sized for.
CARRY_LIMIT = 64 * 2**20
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # age_cgan, for packing (unpacking needs numpy only)


def _image_folder(source: Path) -> Path:
    """The folder holding the images: ``source/images`` when present, else ``source``."""
    return source / "images" if (source / "images").is_dir() else source


def _teacher_file(source: Path, images: Path) -> Path | None:
    for folder in (source, images, images.parent):
        if (folder / TEACHER_FILE).is_file():
            return folder / TEACHER_FILE
    return None


def pack(source, out, limit: int | None = None, seed: int = 0,
         descriptors: str = "float16") -> dict:
    """Pack ``source`` (a folder of face images, directly or in ``images/``, with an optional
    dlib_descriptors.npz) into ``out``; returns a summary (sizes, counts, seconds)."""
    started = time.perf_counter()
    source, out = Path(source), Path(out)
    images = _image_folder(source)
    names = sorted(name for name in os.listdir(images)
                   if name.lower().endswith(IMAGE_SUFFIXES) and (images / name).is_file())
    if not names:
        raise SystemExit(f"pack_data.py: no images in {images}")
    if limit is not None and limit < len(names):
        keep = np.sort(np.random.default_rng(seed).choice(len(names), limit, replace=False))
        names = [names[i] for i in keep]
    blobs = [(images / name).read_bytes() for name in names]
    offsets = np.zeros(len(blobs) + 1, np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    arrays = {
        "data": np.frombuffer(b"".join(blobs), np.uint8),
        "offsets": offsets,
        "filenames": np.array(names, dtype=str),
        "crc32": np.array([zlib.crc32(b) for b in blobs], np.uint32),
    }
    meta = {"format": FORMAT, "source": str(source.resolve()), "folder": images.name
            if images != source else "", "files": len(names), "bytes": int(offsets[-1]),
            "limit": limit, "seed": seed, "descriptors": None}
    teacher = _teacher_file(source, images) if descriptors != "none" else None
    if teacher is not None:
        with np.load(teacher, allow_pickle=False) as stored:
            index = {n: i for i, n in enumerate(stored["filenames"].astype(str).tolist())}
            table = stored["descriptors"]
        rows = np.array([index.get(name, -1) for name in names], np.int64)
        found = rows >= 0
        values = np.zeros((len(names), table.shape[1]), np.float32)
        values[found] = table[rows[found]]
        arrays["descriptors"] = values.astype(descriptors)
        arrays["has_descriptor"] = found
        meta["descriptors"] = {"file": teacher.name, "dtype": descriptors,
                               "found": int(found.sum()),
                               "max_rounding": float(np.abs(
                                   arrays["descriptors"].astype(np.float32) - values).max())}
    from age_cgan.files import atomic_path  # here: unpacking (on the GPU machine) is numpy only

    with atomic_path(out) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, meta=np.array(json.dumps(meta)), **arrays)
    meta.update(out=str(out), packed_bytes=out.stat().st_size,
                seconds=round(time.perf_counter() - started, 2))
    return meta


def unpack(pack_path, dest) -> dict:
    """Rebuild ``dest/<folder>/<name>`` (the original bytes, checked by CRC) and
    ``dest/dlib_descriptors.npz`` from a pack; numpy only."""
    started = time.perf_counter()
    dest = Path(dest)
    with np.load(pack_path, allow_pickle=False) as stored:
        meta = json.loads(str(stored["meta"]))
        if meta.get("format") != FORMAT:
            raise SystemExit(f"pack_data.py: {pack_path} has format {meta.get('format')}, "
                             f"this script reads {FORMAT}")
        data, offsets = stored["data"], stored["offsets"]
        names, crcs = stored["filenames"].astype(str), stored["crc32"]
        table = stored["descriptors"] if "descriptors" in stored.files else None
        found = stored["has_descriptor"] if table is not None else None
    folder = dest / meta.get("folder", "images") if meta.get("folder") else dest
    folder.mkdir(parents=True, exist_ok=True)
    buffer = data.tobytes()
    for i, name in enumerate(names.tolist()):
        blob = buffer[offsets[i]:offsets[i + 1]]
        if zlib.crc32(blob) != int(crcs[i]):
            raise SystemExit(f"pack_data.py: {name} is corrupt in {pack_path}")
        (folder / name).write_bytes(blob)
    if table is not None:
        order = np.argsort(names[found])
        np.savez(dest / TEACHER_FILE, filenames=names[found][order],
                 descriptors=table[found][order].astype(np.float32))
    return {"dest": str(dest), "images": str(folder), "files": len(names),
            "descriptors": int(found.sum()) if found is not None else 0,
            "seconds": round(time.perf_counter() - started, 2)}


def crop_photo(photo, out_dir, size: int) -> Path | None:
    """The photo's largest face cropped like the training faces (needs dlib, here)."""
    try:
        from age_cgan.faces import find_faces
        from age_cgan.visualize import save_png

        face = find_faces(photo, size)[0].image
    except Exception as error:  # noqa: BLE001 (optional: the GPU job then skips the portrait)
        print(f"pack_data.py: warning: no face crop of {photo}: {error}", file=sys.stderr)
        return None
    path = Path(out_dir) / f"{Path(photo).stem}_face{size}.png"
    save_png(face, path)
    return path


def _carry_report(out: Path) -> str:
    """The pack's size next to what else goes with the project."""
    wheels = sum(p.stat().st_size for p in (REPO / ".whl").glob("*.whl")) \
        if (REPO / ".whl").is_dir() else 0
    data = sum(p.stat().st_size for p in out.parent.rglob("*") if p.is_file())
    total = wheels + data
    return (f"carry: {out.parent.name}/ {data / 2**20:.1f} MiB + .whl/ {wheels / 2**20:.1f} MiB"
            f" = {total / 2**20:.1f} MiB of {CARRY_LIMIT // 2**20} MiB (plus the tree, ~0.8 MiB)"
            + ("" if total < CARRY_LIMIT - 2**20 else "  <-- TOO BIG: use --limit"))


def parser() -> argparse.ArgumentParser:
    from age_cgan.helpformat import DocstringHelpFormatter

    p = argparse.ArgumentParser(prog="tools/pack_data.py", description=__doc__,
                                formatter_class=DocstringHelpFormatter)
    p.add_argument("source", help="a face folder (images in it or in images/, dlib_descriptors.npz "
                   "beside), or with --unpack the pack to read")
    p.add_argument("dest", nargs="?", help="--unpack: the folder to rebuild")
    p.add_argument("--unpack", action="store_true", help="rebuild the folder from a pack")
    p.add_argument("--out", help="the pack (default: .gpu-data/<source name>.npz)")
    p.add_argument("--limit", type=int, help="pack a seeded sample of this many files")
    p.add_argument("--seed", type=int, default=0, help="seed of the --limit sample")
    p.add_argument("--descriptors", default="float16", choices=["float16", "float32", "none"],
                   help="how the dlib_descriptors.npz rows are stored in the pack (none: "
                   "left out)")
    p.add_argument("--photo", default=str(REPO / "age_cgan/examples/astronaut.jpg"),
                   help="a photo whose face to crop beside the pack ('' for none)")
    p.add_argument("--size", type=int, default=64, help="side of the face crop")
    return p


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.unpack:
        if not args.dest:
            p.error("--unpack needs PACK and DEST")
        print(json.dumps(unpack(args.source, args.dest)))
        return 0
    out = Path(args.out) if args.out else REPO / ".gpu-data" / f"{Path(args.source).name}.npz"
    summary = pack(args.source, out, args.limit, args.seed, args.descriptors)
    if args.photo:
        crop = crop_photo(args.photo, out.parent, args.size)
        summary["photo_crop"] = str(crop) if crop else None
    print(json.dumps(summary))
    print(f"{out}: {summary['files']} files, {summary['bytes'] / 1e6:.1f} MB of images -> "
          f"{summary['packed_bytes'] / 1e6:.1f} MB packed ({summary['packed_bytes'] / 2**20:.1f}"
          f" MiB) in {summary['seconds']:.0f} s")
    print(_carry_report(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
