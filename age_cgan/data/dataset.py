"""load_dataset: source -> cleaned labels -> decoded faces (cached) -> seeded train/test split.

Design decision 3: faces are decoded once into a uint8 (N, H, W, 3) array with their labels;
every later run reloads that array from the cache in a second or two.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from typing import Sequence

import numpy as np

from age_cgan.ages import AgeBins
from age_cgan.data.cache import FORMAT_VERSION, cache_path, load as load_cache, save as save_cache
from age_cgan.data.images import (CROP_SETTINGS, MISSING, NON_IMAGE, TINY, TRUNCATED, UNREADABLE,
                                  ZERO_BYTE, decode_all)
from age_cgan.data.readers import Listing, Source, find_source
from age_cgan.data.tally import Tally
from age_cgan.errors import AgeCganError, SettingError, setting

NO_CATEGORY = "age in no category"

#: Reasons in the order the summary lists them.
SKIP_ORDER = (MISSING, ZERO_BYTE, NON_IMAGE, TRUNCATED, UNREADABLE, TINY)

KIND_NAMES = {"utkface": "UTKFace", "imdb-wiki": "IMDB-Wiki", "csv": "CSV"}


class NoFacesError(AgeCganError, ValueError):
    """A source that yields no usable face at all."""


@dataclasses.dataclass(frozen=True)
class DataSummary:
    """What load_dataset found, dropped, skipped and split; ``format()`` is the printout."""

    source: str
    kind: str
    image_size: int
    bins: AgeBins
    listed: int
    dropped: Tally  # labels dropped before decoding, by rule
    skipped: Tally  # images that could not be used, by reason
    train_counts: tuple[int, ...]  # faces per age category
    test_counts: tuple[int, ...]
    split_by: str  # "identity" or "file"
    identities: int  # distinct known identities
    test_fraction: float
    seed: int
    cache_path: str | None
    cache_hit: bool
    timings: dict[str, float]

    @property
    def num_faces(self) -> int:
        return sum(self.train_counts) + sum(self.test_counts)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.update(bins=self.bins.spec, dropped=self.dropped.to_dict(),
                   skipped=self.skipped.to_dict(), num_faces=self.num_faces)
        return out

    def format(self) -> str:
        kind = KIND_NAMES.get(self.kind, self.kind)
        lines = [
            f"Face data: {self.source} ({kind})",
            f"  {self.listed:,} entries listed -> {self.num_faces:,} faces at "
            f"{self.image_size}x{self.image_size}, age categories {self.bins.spec}",
            f"  Labels dropped ({self.dropped.total:,}):",
            self.dropped.format("    "),
            f"  Images skipped ({self.skipped.total:,}):",
            self.skipped.format("    "),
            "  Faces per age category:",
            f"    {'category':<10}{'train':>9}{'test':>9}{'total':>9}",
        ]
        rows = zip(self.bins.labels, self.train_counts, self.test_counts)
        for label, train, test in rows:
            lines.append(f"    {label:<10}{train:>9,}{test:>9,}{train + test:>9,}")
        train, test = sum(self.train_counts), sum(self.test_counts)
        lines.append(f"    {'total':<10}{train:>9,}{test:>9,}{train + test:>9,}")
        if self.split_by == "identity":
            how = f"by identity ({self.identities:,} known; a person is on one side only)"
        else:
            how = "by file (no identities known)"
        lines.append(f"  Split: {train:,} train / {test:,} test, {how}, "
                     f"test fraction {self.test_fraction:g}, seed {self.seed}")
        if self.cache_path is None:
            lines.append("  Cache: off")
        else:
            state = "loaded" if self.cache_hit else "written"
            try:
                size = f", {os.path.getsize(self.cache_path) / 2**20:,.0f} MiB"
            except OSError:
                size, state = "", "not written"
            lines.append(f"  Cache: {self.cache_path} ({state}{size})")
        timings = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in self.timings.items())
        lines.append(f"  Timings: {timings}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


@dataclasses.dataclass(frozen=True, eq=False)
class FaceDataset:
    """Decoded faces and their labels, one row per face.

    images uint8 (N, H, W, 3) RGB in [0, 255]; ages float32 (N,) years; categories int64 (N,)
    indices into ``bins``; identities str (N,) ('' when unknown); paths str (N,) source files;
    is_test bool (N,) the seeded split; summary the report of how the data was made.
    ``train()`` / ``test()`` copy their rows; to train on a large set without a second copy,
    give the sampler ``indices=~ds.is_test`` instead.
    """

    images: np.ndarray
    ages: np.ndarray
    categories: np.ndarray
    identities: np.ndarray
    paths: np.ndarray
    is_test: np.ndarray
    bins: AgeBins
    summary: DataSummary

    def __len__(self) -> int:
        return len(self.ages)

    @property
    def num_ages(self) -> int:
        return self.bins.num_ages

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    def subset(self, rows) -> "FaceDataset":
        """The rows selected by a boolean mask or an index array (arrays are copied)."""
        return dataclasses.replace(
            self,
            images=self.images[rows],
            ages=self.ages[rows],
            categories=self.categories[rows],
            identities=self.identities[rows],
            paths=self.paths[rows],
            is_test=self.is_test[rows],
        )

    def train(self) -> "FaceDataset":
        return self.subset(~self.is_test)

    def test(self) -> "FaceDataset":
        return self.subset(self.is_test)


# --------------------------------------------------------------------------- split


def split_test(keys: Sequence[str], test_fraction: float, seed: int = 0) -> np.ndarray:
    """Boolean is_test per row: whole groups (rows sharing a key) go to one side.

    Groups are ordered by a seeded hash of their key and taken into the test side until it
    holds ``round(test_fraction * N)`` rows (at most one group more). The hash makes the split
    independent of row order and file system, and stable for a key when other data changes.
    """
    keys = np.asarray(keys, dtype=str)
    n = len(keys)
    if n == 0 or test_fraction <= 0:
        return np.zeros(n, dtype=bool)
    groups, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    salt = f"{seed}\0".encode()
    hashes = np.array(
        [int.from_bytes(hashlib.blake2b(salt + key.encode(), digest_size=8).digest(), "big")
         for key in groups.tolist()],
        dtype=np.uint64,
    )
    order = np.argsort(hashes, kind="stable")
    before = np.cumsum(counts[order]) - counts[order]
    take = before < round(test_fraction * n)
    if take.all() and len(groups) > 1:
        take[-1] = False  # keep a training side
    chosen = np.zeros(len(groups), dtype=bool)
    chosen[order[take]] = True
    return chosen[inverse.ravel()]


def validation_rows(dataset: "FaceDataset", fraction: float = 0.05, seed: int = 0) -> np.ndarray:
    """Rows (indices into ``dataset``) of a validation split carved from its training faces:
    a seeded ``fraction`` of them. The image-to-image stages do not train on these, so a
    setting such as the aging strength can be chosen on faces that are neither trained on nor
    the test split."""
    train = np.flatnonzero(~dataset.is_test)
    count = int(round(len(train) * fraction))
    return np.sort(np.random.default_rng([seed, 7]).permutation(train)[:count])


def split_keys(names: np.ndarray, identities: np.ndarray) -> np.ndarray:
    """Identity where known, else the file's own name (so the file is its own group)."""
    names = np.asarray(names, dtype=str)
    identities = np.asarray(identities, dtype=str)
    return np.where(identities != "", np.char.add("id:", identities), np.char.add("file:", names))


# --------------------------------------------------------------------------- preparation


def _compact(images: np.ndarray, keep: np.ndarray, block: int = 1024) -> np.ndarray:
    """Move the kept rows to the front in place (no second copy of a 1 GB array)."""
    kept = np.flatnonzero(keep)
    dest = 0
    for run in np.split(kept, np.flatnonzero(np.diff(kept) != 1) + 1):
        if run.size == 0:
            continue
        start, length = int(run[0]), len(run)
        if start != dest:
            for offset in range(0, length, block):
                size = min(block, length - offset)
                images[dest + offset:dest + offset + size] = \
                    images[start + offset:start + offset + size]
        dest += length
    return images[:dest]


def _no_faces(source: Source, listing: Listing, skipped: Tally) -> NoFacesError:
    return NoFacesError(
        f"no usable face in {source.path} ({KIND_NAMES[source.kind]}, {listing.listed} entries "
        f"listed).\nLabels dropped:\n{listing.dropped.format()}\n"
        f"Images skipped:\n{skipped.format()}"
    )


def _prepare(source: Source, listing: Listing, image_size: int, bins: AgeBins, workers,
             progress, timings: dict) -> tuple[dict, dict]:
    start = time.perf_counter()
    categories = bins.category(listing.ages)
    listing.select(categories >= 0, NO_CATEGORY)
    categories = categories[categories >= 0]
    timings["read labels"] += time.perf_counter() - start
    if len(listing) == 0:
        raise _no_faces(source, listing, Tally())

    start = time.perf_counter()
    images, failures = decode_all(listing.paths(), image_size, workers, progress)
    skipped = Tally()
    for reason in SKIP_ORDER + tuple(sorted({r for _, r in failures} - set(SKIP_ORDER))):
        skipped.add(reason, [listing.names[row] for row, r in failures if r == reason])
    keep = np.ones(len(listing), dtype=bool)
    keep[[row for row, _ in failures]] = False
    if not keep.all():
        images = _compact(images, keep)
    timings["decode"] = time.perf_counter() - start
    if not keep.any():
        raise _no_faces(source, listing, skipped)

    arrays = {
        "images": images,
        "ages": listing.ages[keep].astype(np.float32),
        "categories": categories[keep].astype(np.int64),
        "identities": np.array([i for i, k in zip(listing.identities, keep) if k], dtype=str),
        "names": np.array([n for n, k in zip(listing.names, keep) if k], dtype=str),
    }
    meta = {
        "format": FORMAT_VERSION,
        "kind": source.kind,
        "source": str(source.path),
        "root": str(listing.root),
        "image_size": image_size,
        "bins": bins.spec,
        "listed": listing.listed,
        "dropped": listing.dropped.to_dict(),
        "skipped": skipped.to_dict(),
    }
    return arrays, meta


def load_dataset(
    source: str | os.PathLike,
    image_size: int = 64,  # the paper's and the book's 64x64 faces
    age_bins: str | AgeBins | None = None,
    cache_dir: str | os.PathLike | None | bool = None,
    test_fraction: float = 0.1,  # the paper held out 10k of ~120k faces
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> FaceDataset:
    """Faces and ages from ``source`` (a .mat, a UTKFace folder, a .csv, or a folder holding one).

    The decoded faces are cached in ``cache_dir`` (default ``$AGE_CGAN_CACHE`` or
    ``~/.cache/age_cgan``; ``False`` disables the cache). Labels whose age is invalid or in no
    category, and images that cannot be used, are dropped and counted in ``ds.summary``.
    Raises NoFacesError when nothing usable remains, ValueError / FileNotFoundError when the
    source is not recognised.
    """
    started = time.perf_counter()
    if not 0 <= test_fraction < 1:
        raise SettingError(f"{setting('test_fraction')} must be in [0, 1), not {test_fraction}")
    if int(image_size) < 1:
        raise SettingError(f"{setting('image_size')} must be positive, not {image_size}")
    image_size = int(image_size)
    bins = AgeBins.parse(age_bins)
    found = find_source(source)
    timings: dict[str, float] = {}
    listing = found.read()
    timings["read labels"] = time.perf_counter() - started

    path = None
    if cache_dir is not False:
        folder = None if cache_dir in (None, True) else cache_dir
        path = cache_path(found, image_size, bins.spec, CROP_SETTINGS, folder, listing)
    stored = load_cache(path) if path is not None else None
    if stored is not None:
        timings["load cache"] = time.perf_counter() - started
        arrays, meta = stored
    else:
        arrays, meta = _prepare(found, listing, image_size, bins, workers, progress, timings)
        if path is not None:
            start = time.perf_counter()
            if not save_cache(path, arrays, meta):
                path = None
            timings["write cache"] = time.perf_counter() - start

    start = time.perf_counter()
    names, identities = arrays["names"], arrays["identities"]
    is_test = split_test(split_keys(names, identities), test_fraction, seed)
    root = meta["root"]
    paths = np.array([os.path.join(root, name) for name in names.tolist()], dtype=str)
    timings["split"] = time.perf_counter() - start
    timings["total"] = time.perf_counter() - started

    categories = arrays["categories"]
    known = identities[identities != ""]
    summary = DataSummary(
        source=meta["source"],
        kind=meta["kind"],
        image_size=image_size,
        bins=bins,
        listed=int(meta["listed"]),
        dropped=Tally(meta["dropped"]),
        skipped=Tally(meta["skipped"]),
        train_counts=tuple(np.bincount(categories[~is_test], minlength=bins.num_ages).tolist()),
        test_counts=tuple(np.bincount(categories[is_test], minlength=bins.num_ages).tolist()),
        split_by="identity" if known.size else "file",
        identities=int(np.unique(known).size),
        test_fraction=test_fraction,
        seed=seed,
        cache_path=None if path is None else str(path),
        cache_hit=stored is not None,
        timings=timings,
    )
    return FaceDataset(
        images=arrays["images"],
        ages=arrays["ages"],
        categories=categories,
        identities=identities,
        paths=paths,
        is_test=is_test,
        bins=bins,
        summary=summary,
    )
