"""Readers: a data argument -> (image path, age, identity) with every dropped label counted.

Three layouts are understood (reference.md):

* IMDB-Wiki ``wiki.mat`` / ``imdb.mat``: a struct ``wiki`` or ``imdb`` with ``full_path`` (relative
  to the .mat's folder), ``dob`` (MATLAB serial day number), ``photo_taken`` (year),
  ``face_score`` (-inf = no face), ``second_face_score`` (NaN = one face) and ``name``.
* UTKFace aligned-and-cropped folder: ``AGE_GENDER_RACE_DATETIME.jpg.chip.jpg`` file names.
* A CSV with columns ``path, age`` and optionally ``identity`` (paths relative to the CSV).

A label that cannot be read or is out of range is dropped and counted, never guessed (the book
code gives an age <= 0 the previous image's category).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import re
from pathlib import Path

import numpy as np

from age_cgan.ages import MAX_AGE
from age_cgan.data.tally import Tally

IMDB_WIKI, UTKFACE, CSV = "imdb-wiki", "utkface", "csv"

#: File suffixes a UTKFace folder scan looks at (other files, e.g. a README, are ignored).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

#: UTKFace aligned-and-cropped names: age, gender (0 male, 1 female), race (0-4), date-time.
UTKFACE_NAME = re.compile(r"^(\d{1,3})_([01])_([0-4])_(\d+)\.jpg\.chip\.jpg$")

# Label drop reasons, as printed in the summary.
UNPARSABLE_NAME = "unparsable name"
NO_FACE = "no face (face_score < 1)"
SECOND_FACE = "second face"
NO_DOB = "no date of birth"
AGE_OUT_OF_RANGE = f"age outside 0-{MAX_AGE}"
BAD_AGE = "unreadable age"
EMPTY_PATH = "empty path"

EXPECTED = (
    "expected one of:\n"
    "  - an IMDB-Wiki wiki.mat or imdb.mat (or a folder holding one),\n"
    "  - a UTKFace folder of AGE_GENDER_RACE_DATETIME.jpg.chip.jpg files "
    "(or a folder whose subfolder, e.g. images/, holds them),\n"
    "  - a .csv with columns path,age[,identity] (or a folder holding one)"
)


@dataclasses.dataclass
class Listing:
    """What a reader found: faces with a usable age, and what it dropped.

    ``names`` are paths relative to ``root`` (or absolute where a CSV gives them); ``ages`` are
    years (float64, all within 0..MAX_AGE); ``identities`` are '' where unknown.
    """

    kind: str
    root: Path
    names: list[str]
    ages: np.ndarray
    identities: list[str]
    dropped: Tally
    listed: int  # entries seen before any cleaning

    def __len__(self) -> int:
        return len(self.names)

    def paths(self) -> list[str]:
        root = str(self.root)
        return [os.path.join(root, name) for name in self.names]

    def select(self, keep: np.ndarray, reason: str) -> "Listing":
        """Keep rows where ``keep`` is true; the others are counted under ``reason``."""
        keep = np.asarray(keep, dtype=bool)
        self.dropped.add(reason, (n for n, k in zip(self.names, keep) if not k))
        self.names = [n for n, k in zip(self.names, keep) if k]
        self.identities = [i for i, k in zip(self.identities, keep) if k]
        self.ages = self.ages[keep]
        return self


def _drop_bad_ages(listing: Listing) -> Listing:
    ages = listing.ages
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(ages) & (ages >= 0) & (ages <= MAX_AGE)
    return listing.select(valid, AGE_OUT_OF_RANGE)


# --------------------------------------------------------------------------- IMDB-Wiki


def _strings(values) -> list[str]:
    """A MATLAB cell array of strings as loaded by scipy (empty cells become '')."""
    if isinstance(values, str):
        return [values]
    out = []
    for value in np.asarray(values, dtype=object).ravel():
        if isinstance(value, np.ndarray):
            value = "" if value.size == 0 else value.ravel()[0]
        out.append(str(value).strip())
    return out


def _numbers(values, n: int, field: str) -> np.ndarray:
    array = np.atleast_1d(np.asarray(values, dtype=np.float64)).ravel()
    if array.size != n:
        raise ValueError(f"field {field!r} has {array.size} entries, full_path has {n}")
    return array


def matlab_birth_year_month(dob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Year and month (1-12) of MATLAB serial dates: Python date = fromordinal(dob - 366)."""
    days = np.floor(dob).astype(np.int64) - 367  # days since 0001-01-01 (ordinal 1)
    dates = np.datetime64("0001-01-01", "D") + days.astype("timedelta64[D]")
    year = dates.astype("datetime64[Y]").astype(np.int64) + 1970
    month = dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
    return year, month


def read_imdb_wiki(mat_path: str | os.PathLike) -> Listing:
    """Read ``wiki.mat`` / ``imdb.mat`` and apply the common cleaning, counting each rule.

    Age = photo_taken - birth year, minus 1 when born in July or later (the photo year is taken
    as mid-year). Rules, in order: face_score >= 1, no second face, a valid dob, 0 <= age <= 100.
    Identity is the ``name`` field.
    """
    from scipy.io import loadmat  # scipy is only needed for this layout

    mat_path = Path(mat_path)
    try:
        mat = loadmat(mat_path, squeeze_me=True, struct_as_record=False)
    except Exception as error:  # scipy raises several types for a non-MATLAB file
        raise ValueError(f"cannot read {mat_path} as a MATLAB file: {error}") from error
    keys = [key for key in mat if not key.startswith("__")]
    key = next((k for k in ("wiki", "imdb") if k in mat), None)
    if key is None:
        raise ValueError(f"{mat_path}: expected a struct named 'wiki' or 'imdb', found {keys}")
    meta = mat[key]
    fields = list(getattr(meta, "_fieldnames", []))
    needed = ["full_path", "dob", "photo_taken", "face_score", "second_face_score"]
    missing = [field for field in needed if field not in fields]
    if missing:
        raise ValueError(f"{mat_path}: struct {key!r} lacks {missing}; its fields are {fields}")

    names = _strings(meta.full_path)
    n = len(names)
    dob = _numbers(meta.dob, n, "dob")
    taken = _numbers(meta.photo_taken, n, "photo_taken")
    face_score = _numbers(meta.face_score, n, "face_score")
    second = _numbers(meta.second_face_score, n, "second_face_score")
    identities = _strings(meta.name) if "name" in fields else [""] * n
    if len(identities) != n:
        raise ValueError(f"field 'name' has {len(identities)} entries, full_path has {n}")

    listing = Listing(IMDB_WIKI, mat_path.parent, names, np.zeros(n), identities, Tally(), n)
    columns = {"dob": dob, "taken": taken, "face": face_score, "second": second}

    def apply(keep, reason):
        nonlocal columns
        keep = np.asarray(keep, dtype=bool)
        listing.select(keep, reason)
        columns = {name: values[keep] for name, values in columns.items()}

    with np.errstate(invalid="ignore"):
        apply(columns["face"] >= 1, NO_FACE)  # -inf: no face found; NaN fails too
        apply(~np.isfinite(columns["second"]), SECOND_FACE)  # NaN: only one face
        # Serial day numbers of years 1..9999 (fromordinal needs an ordinal >= 1).
        apply(np.isfinite(columns["dob"]) & (columns["dob"] >= 367)
              & (columns["dob"] < 3_652_427), NO_DOB)
    year, month = matlab_birth_year_month(columns["dob"])
    listing.ages = columns["taken"] - year - (month >= 7)
    return _drop_bad_ages(listing)


# --------------------------------------------------------------------------- UTKFace


def _image_entries(folder: Path) -> list[os.DirEntry]:
    """Image-like files in ``folder`` (broken links included, so they count as missing)."""
    with os.scandir(folder) as scan:
        return [
            entry for entry in scan
            if not entry.name.startswith(".")
            and entry.name.lower().endswith(IMAGE_SUFFIXES)
            and (entry.is_symlink() or entry.is_file())
        ]


def read_utkface(folder: str | os.PathLike) -> Listing:
    """Read ages from UTKFace names ``AGE_GENDER_RACE_DATETIME.jpg.chip.jpg`` in ``folder``.

    Image files whose names do not follow the pattern are counted under "unparsable name" (raw
    UTKFace has a few, e.g. a missing field or a stray space). UTKFace has no identities.
    """
    folder = Path(folder)
    files = sorted(entry.name for entry in _image_entries(folder))
    names, ages, bad = [], [], []
    for name in files:
        match = UTKFACE_NAME.match(name)
        if match:
            names.append(name)
            ages.append(float(match.group(1)))
        else:
            bad.append(name)
    dropped = Tally()
    dropped.add(UNPARSABLE_NAME, bad)
    listing = Listing(UTKFACE, folder, names, np.asarray(ages, dtype=np.float64),
                      [""] * len(names), dropped, len(files))
    return _drop_bad_ages(listing)


# --------------------------------------------------------------------------- CSV


def _csv_header(csv_path: Path) -> list[str]:
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), [])
    return [column.strip().lower() for column in header]


def read_csv(csv_path: str | os.PathLike) -> Listing:
    """Read a CSV with columns ``path, age`` and optionally ``identity``.

    Relative paths are relative to the CSV's folder. Rows with an empty path or an age that is
    not a number are counted, not guessed; ages may be fractional.
    """
    csv_path = Path(csv_path)
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except UnicodeDecodeError as error:
        raise ValueError(_not_utf8(csv_path, error)) from error
    header = [column.strip().lower() for column in (rows[0] if rows else [])]
    if "path" not in header or "age" not in header:
        raise ValueError(
            f"{csv_path}: expected columns path, age (and optionally identity); found {header}"
        )
    path_col, age_col = header.index("path"), header.index("age")
    id_col = header.index("identity") if "identity" in header else None
    names, ages, identities = [], [], []
    dropped = Tally()
    body = [row for row in rows[1:] if any(cell.strip() for cell in row)]  # skip blank lines
    for line, row in enumerate(body, start=2):
        row = row + [""] * (len(header) - len(row))
        path, age = row[path_col].strip(), row[age_col].strip()
        if not path:
            dropped.add(EMPTY_PATH, [f"line {line}"])
            continue
        try:
            value = float(age)
        except ValueError:
            dropped.add(BAD_AGE, [f"{path} ({age!r})"])
            continue
        names.append(path)
        ages.append(value)
        identities.append(row[id_col].strip() if id_col is not None else "")
    listing = Listing(CSV, csv_path.parent, names, np.asarray(ages, dtype=np.float64),
                      identities, dropped, len(body))
    return _drop_bad_ages(listing)


# --------------------------------------------------------------------------- choosing


@dataclasses.dataclass(frozen=True)
class Source:
    """A located data source: its kind and the file or folder the reader opens."""

    kind: str
    path: Path

    def read(self) -> Listing:
        reader = {IMDB_WIKI: read_imdb_wiki, UTKFACE: read_utkface, CSV: read_csv}[self.kind]
        return reader(self.path)

    def signature(self, listing: Listing | None = None) -> str:
        """A cheap fingerprint of the source's content, for the cache key.

        UTKFace folders: name, size and modification time of every image file (the labels
        live in the names). Metadata files (CSV, .mat): their size and modification time, and
        the name, size and modification time of every image they list (``listing``, read when
        not given), so that an image added, fixed or replaced beside them is seen.
        """
        if self.kind != UTKFACE:
            stat = self.path.stat()
            listing = listing if listing is not None else self.read()
            digest = hashlib.sha1()
            for path in listing.paths():
                try:
                    image = os.stat(path)
                    digest.update(f"{path}\0{image.st_size}\0{image.st_mtime_ns}\n".encode())
                except OSError:
                    digest.update(f"{path}\0missing\n".encode())
            return f"{stat.st_size}:{stat.st_mtime_ns}:{len(listing)}:{digest.hexdigest()}"
        digest = hashlib.sha1()
        entries = sorted(_image_entries(self.path), key=lambda entry: entry.name)
        for entry in entries:
            stat = entry.stat(follow_symlinks=False)
            digest.update(f"{entry.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return f"{len(entries)}:{digest.hexdigest()}"


def _has_utkface_names(folder: Path) -> bool:
    try:
        with os.scandir(folder) as scan:
            return any(entry.name.endswith(".chip.jpg") for entry in scan)
    except OSError:
        return False


def _not_utf8(path: Path, error: UnicodeDecodeError) -> str:
    return (f"{path} is not UTF-8 text (byte {error.object[error.start]:#04x} at offset "
            f"{error.start}): save it as UTF-8 (a spreadsheet's \"CSV UTF-8\"), e.g. "
            f"`iconv -f latin1 -t utf-8 {path.name} > utf8.csv`")


def _is_face_csv(path: Path) -> bool:
    try:
        header = _csv_header(path)
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return "path" in header and "age" in header


def _pick(candidates: list[Path], kind: str, folder: Path) -> Source | None:
    if len(candidates) == 1:
        return Source(kind, candidates[0].resolve())
    if candidates:
        listed = ", ".join(str(c.name) for c in candidates)
        raise ValueError(f"{folder}: several {kind} sources ({listed}); name one of them")
    return None


def find_source(path: str | os.PathLike) -> Source:
    """Pick the reader from what ``path`` holds: a .mat, a UTKFace folder, or a .csv."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data source {path} does not exist; {EXPECTED}")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".mat":
            return Source(IMDB_WIKI, path.resolve())
        if suffix == ".csv":
            return Source(CSV, path.resolve())
        raise ValueError(f"{path} is neither a .mat nor a .csv; {EXPECTED}")

    children = sorted(path.iterdir())
    files = [child for child in children if child.is_file()]
    mats = [f for f in files if f.suffix.lower() == ".mat"]
    named = [f for f in mats if f.name.lower() in ("wiki.mat", "imdb.mat")]
    source = _pick(named or mats, IMDB_WIKI, path)
    if source is None and _has_utkface_names(path):
        source = Source(UTKFACE, path.resolve())
    if source is None:
        folders = [c for c in children if c.is_dir() and not c.name.startswith(".")]
        source = _pick([f for f in folders if _has_utkface_names(f)], UTKFACE, path)
    if source is None:
        source = _pick([f for f in files if f.suffix.lower() == ".csv" and _is_face_csv(f)],
                       CSV, path)
    if source is None:
        shown = ", ".join(c.name + ("/" if c.is_dir() else "") for c in children[:8])
        more = f" (and {len(children) - 8} more)" if len(children) > 8 else ""
        undecodable = []
        for csv_file in (f for f in files if f.suffix.lower() == ".csv"):
            try:
                _csv_header(csv_file)
            except UnicodeDecodeError as error:
                undecodable.append(_not_utf8(csv_file, error))
        raise ValueError(f"no face data found in {path}: it holds {shown or 'nothing'}{more}; "
                         f"{EXPECTED}" + "".join(f"\n  {line}" for line in undecodable))
    return source
