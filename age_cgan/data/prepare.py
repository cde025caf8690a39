"""``python -m age_cgan.data prepare UTKFACE_DIR OUT_DIR``: the public UTKFace download as the
folder the training commands read (``--data OUT_DIR``).

UTKFace's "Aligned&Cropped Faces" are 200x200 JPEGs named ``AGE_GENDER_RACE_DATETIME.jpg.chip.jpg``
(``UTKFace.tar.gz`` unpacks to ``UTKFace/``). Each face whose name the UTKFace reader accepts
(``readers.read_utkface``: a few raw names are malformed) is decoded at full resolution,
converted to RGB, centre-cropped and resized with Lanczos to SIZE px (``images.decode_face``,
as training decodes), and saved under its own name as a JPEG (quality 95, no chroma
subsampling): the names keep the labels. Files that cannot be used are skipped and counted by
reason, never guessed; an existing output is never overwritten unless asked.

With ``descriptors=True`` it also writes ``dlib_descriptors.npz`` (dlib's descriptor of every
written face, ``judges.FaceVerifier``, the ``[eval]`` extra): the teacher ``train.py --stage
fr`` (and ``--recipe lite``) distils. dlib reads ~7-11 faces per second on a CPU.
"""

from __future__ import annotations

import dataclasses
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from age_cgan.data.images import SkipImage, decode_face, default_workers
from age_cgan.data.readers import _has_utkface_names, read_utkface
from age_cgan.data.tally import Tally
from age_cgan.errors import AgeCganError, setting

#: How the faces are stored: the settings of ../shared/data/utkface64 (4:4:4 chroma).
JPEG_SETTINGS = {"quality": 95, "subsampling": 0}
#: A face being written; renamed to its own name when complete (readers ignore this suffix).
PART_SUFFIX = ".part"
#: The descriptor file train.py --stage fr looks for beside the faces (judges.TEACHER_FILE).
TEACHER_FILE = "dlib_descriptors.npz"


class PrepareError(AgeCganError, ValueError):
    """The source is not a UTKFace folder, or the output cannot be written as asked."""


@dataclasses.dataclass
class PrepareReport:
    """What ``prepare_utkface`` read, wrote and skipped; ``format()`` is the printout."""

    source: Path
    out: Path
    size: int
    listed: int  # image files in the source
    written: int
    skipped: Tally  # by reason: unparsable name, age out of range, not an image, ...
    seconds: float
    descriptors: Path | None = None
    removed_teacher: bool = False  # an old dlib_descriptors.npz in OUT_DIR was deleted

    def format(self, word=None) -> str:
        lines = [f"prepared {self.source} -> {self.out}: {self.written:,} faces at "
                 f"{self.size}x{self.size} px (JPEG quality {JPEG_SETTINGS['quality']}) in "
                 f"{self.seconds:.1f} s, from {self.listed:,} image files"]
        lines.append(f"skipped {self.skipped.total:,}" + (":" if self.skipped.total else ""))
        if self.skipped.total:
            lines.append(self.skipped.format())
        if self.removed_teacher:
            lines.append(f"removed the old {TEACHER_FILE} (it described the faces replaced)")
        if self.descriptors:
            lines.append(f"wrote {self.descriptors} (the teacher of train.py --stage fr)")
        else:
            lines.append(f"no {TEACHER_FILE}: train.py --stage fr and --recipe lite need one "
                         "(prepare again with --descriptors; it needs pip install "
                         "\"age-cgan[eval]\"); stages 1, 2 and 3 do not")
        lines.append(f"train on it with: python train.py --data {self.out} ...")
        return "\n".join(lines)


def utkface_folder(path, out=None) -> Path:
    """The folder holding the UTKFace files: ``path`` itself or its one subfolder that does
    (``find_source``'s rule; the output folder ``out``, when inside ``path``, is not a
    candidate); PrepareError for anything else."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise PrepareError(f"{path} is not a folder: pass the folder of the unpacked UTKFace "
                           "download (its .jpg.chip.jpg files, or the folder holding them)")
    if _has_utkface_names(path):
        return path.resolve()
    skip = Path(out).expanduser().resolve() if out is not None else None
    found = sorted(child for child in path.iterdir() if child.is_dir()
                   and not child.name.startswith(".") and child.resolve() != skip
                   and _has_utkface_names(child))
    if len(found) == 1:
        return found[0].resolve()
    if found:
        raise PrepareError(f"{path} holds several UTKFace folders "
                           f"({', '.join(child.name for child in found)}): name one of them")
    raise PrepareError(f"no UTKFace faces in {path}: expected AGE_GENDER_RACE_DATETIME"
                       ".jpg.chip.jpg files in it or in one folder inside it (the "
                       "\"Aligned&Cropped Faces\" download unpacks to UTKFace/)")


def check_output(source: Path, out: Path, overwrite: bool) -> None:
    """Refuse an output that is the source itself, a file, or a folder with anything in it
    (unless ``overwrite``)."""
    if out.resolve() == source.resolve():
        raise PrepareError(f"the output {out} is the UTKFace folder itself: its originals "
                           "would be replaced; choose another folder")
    if out.exists() and not out.is_dir():
        raise PrepareError(f"the output {out} is a file, not a folder")
    if out.is_dir() and not overwrite:
        entries = sum(1 for _ in os.scandir(out))
        if entries:
            raise PrepareError(
                f"the output {out} already holds {entries} file{'s' * (entries != 1)}; pass "
                f"{setting('overwrite', True)} to replace the faces of the same names (other "
                "files are left as they are), or choose an empty or new folder")


def _write_face(source: Path, out: Path, name: str, size: int) -> str | None:
    """Decode, resize and save one face; returns the skip reason or None."""
    try:
        face = decode_face(str(source / name), size, draft=False)
    except SkipImage as skip:
        return skip.reason
    part = out / (name + PART_SUFFIX)
    Image.fromarray(face).save(part, "JPEG", **JPEG_SETTINGS)
    os.replace(part, out / name)
    return None


def _remove_parts(out: Path) -> None:
    for entry in os.scandir(out):
        if entry.name.endswith(PART_SUFFIX):
            os.unlink(entry.path)


def write_descriptors(verifier, out: Path, names: list[str], size: int,
                      progress: bool = True) -> Path:
    """dlib's descriptor (``verifier``: a ``judges.FaceVerifier``) of each written face, read
    back as training reads it, into ``OUT/dlib_descriptors.npz`` (sorted ``filenames``, float32
    ``descriptors``): the layout ``judges.teacher_descriptors`` looks faces up in."""
    from tqdm.auto import tqdm

    names = sorted(names)
    table = np.zeros((len(names), 128), dtype=np.float32)
    for row, name in enumerate(tqdm(names, desc="dlib descriptors", unit="face",
                                    disable=not progress, dynamic_ncols=True)):
        table[row] = verifier.descriptors(decode_face(str(out / name), size))[0]
    path = out / TEACHER_FILE
    part = out / (TEACHER_FILE + PART_SUFFIX)
    with open(part, "wb") as handle:
        np.savez(handle, filenames=np.asarray(names), descriptors=table)
    os.replace(part, path)
    return path


def prepare_utkface(source, out, size: int = 64, overwrite: bool = False,
                    workers: int | None = None, progress: bool = True,
                    descriptors: bool = False) -> PrepareReport:
    """Write every usable face of the UTKFace folder ``source`` to ``out`` at ``size`` px under
    its own name; returns the report. Raises PrepareError before writing anything when the
    source is not UTKFace or the output is not an empty (or new) folder (``overwrite``: a
    folder with files is fine, faces of the same names are replaced)."""
    from tqdm.auto import tqdm

    if size < 16:
        raise PrepareError(f"{setting('size')} must be at least 16 (pixels), got {size}")
    start = time.perf_counter()
    folder = utkface_folder(source, out)
    out = Path(out).expanduser()
    check_output(folder, out, overwrite)
    verifier = None
    if descriptors:  # before the long pass: a missing extra fails first
        from age_cgan.judges import FaceVerifier

        verifier = FaceVerifier()  # JudgeUnavailable (an ImportError) names the extra
    listing = read_utkface(folder)
    skipped: Tally = listing.dropped  # names the reader does not accept, ages out of range
    out.mkdir(parents=True, exist_ok=True)
    removed_teacher = (out / TEACHER_FILE).is_file()
    if removed_teacher:  # it describes the files about to be replaced
        (out / TEACHER_FILE).unlink()
    workers = default_workers() if workers is None else max(1, workers)
    written, by_reason = [], {}
    try:
        with ThreadPoolExecutor(workers) as pool, \
                tqdm(total=len(listing.names), desc="preparing faces", unit="img",
                     disable=not progress, dynamic_ncols=True) as bar:
            results = pool.map(lambda name: _write_face(folder, out, name, size), listing.names)
            try:
                for name, reason in zip(listing.names, results):
                    if reason is None:
                        written.append(name)
                    else:
                        by_reason.setdefault(reason, []).append(name)
                    bar.update()
            except BaseException:  # Ctrl-C: do not write the remaining faces first
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    finally:
        _remove_parts(out)  # an interrupted write leaves no half file
    for reason, names in by_reason.items():
        skipped.add(reason, names)
    teacher = (write_descriptors(verifier, out, written, size, progress)
               if verifier is not None and written else None)
    return PrepareReport(folder, out, size, listing.listed, len(written), skipped,
                         time.perf_counter() - start, teacher, removed_teacher)
