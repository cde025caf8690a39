"""Face data: readers, bad input, label alignment, cache, split and sampler, on tiny fixtures.

Every good fixture face is a flat colour whose value encodes its age (value = 2 * age + 20), so
a label that drifts away from its image after a failure shows up as a wrong pixel value.
"""

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from age_cgan.ages import AgeBins
from age_cgan.data import (
    BatchSampler,
    NoFacesError,
    decode_face,
    denormalize,
    find_source,
    load_dataset,
    normalize,
    read_csv,
    read_imdb_wiki,
    read_utkface,
    split_test,
)
from age_cgan.data import images as imaging
from age_cgan.data.__main__ import main as data_main
from age_cgan.data.readers import matlab_birth_year_month

SHARED_UTKFACE = Path(__file__).resolve().parents[1].parent / "shared/data/utkface64"


def value(age):
    return int(2 * age + 20)


def centre(image):
    """Mean of the central half of a face: resampling may blend the border, never the centre."""
    side = image.shape[0]
    return float(image[side // 4:3 * side // 4, side // 4:3 * side // 4].mean())


def save_face(path, age, mode="RGB", size=(64, 64), fmt=None):
    """A flat face of value(age) in the given Pillow mode, saved as JPEG or PNG."""
    v = value(age)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "RGB":
        image = Image.new("RGB", size, (v, v, v))
    elif mode == "L":
        image = Image.new("L", size, v)
    elif mode == "CMYK":
        image = Image.new("CMYK", size, (0, 0, 0, 255 - v))
    elif mode == "P":
        image = Image.new("P", size, 1)
        image.putpalette([255, 0, 0, v, v, v] + [0] * 762)
        image.info["transparency"] = 0  # an unused index, as in many GIF/PNG faces
    elif mode == "LA":
        image = Image.new("LA", size, (v, 255))
    elif mode == "RGBA":
        image = Image.new("RGBA", size, (v, v, v, 255))
    elif mode == "I;16":
        image = Image.fromarray(np.full(size[::-1], v * 256, dtype=np.uint16))
    elif mode == "wide":  # 96x64: the centre square is the face, the sides are white
        array = np.full((64, 96, 3), 255, np.uint8)
        array[:, 16:80] = v
        image = Image.fromarray(array)
    else:
        raise ValueError(mode)
    fmt = fmt or ("JPEG" if mode in ("RGB", "L", "CMYK", "wide") else "PNG")
    image.save(path, fmt, quality=95)
    return path


def noisy_jpeg_bytes(size=64):
    rng = np.random.default_rng(0)
    path_image = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    import io
    buffer = io.BytesIO()
    path_image.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def utk(age, n, gender=0, race=0):
    return f"{age}_{gender}_{race}_2017011617452{n:04d}.jpg.chip.jpg"


GOOD = [  # (age, mode, size)
    (0, "RGB", (64, 64)),
    (12, "wide", (96, 64)),
    (25, "RGB", (64, 64)),
    (30, "L", (64, 64)),
    (41, "CMYK", (64, 64)),
    (47, "P", (64, 64)),
    (55, "LA", (40, 40)),
    (62, "RGBA", (64, 64)),
    (70, "I;16", (64, 64)),
    (88, "RGB", (200, 200)),
    (95, "RGB", (16, 16)),
    (100, "RGB", (80, 80)),
]


@pytest.fixture
def utk_folder(tmp_path):
    """UTKFace-style folder: 12 good faces, one of every bad kind, 3 bad names, 1 age of 116."""
    folder = tmp_path / "UTKFace"
    for n, (age, mode, size) in enumerate(GOOD):
        save_face(folder / utk(age, n), age, mode, size)
    # Bad images with valid names and ages, interleaved in sort order with the good ones.
    (folder / utk(20, 100)).write_bytes(b"")  # zero-byte
    (folder / utk(21, 101)).write_bytes(noisy_jpeg_bytes()[:900])  # truncated
    (folder / utk(22, 102)).write_text("this is not an image\n")  # non-image
    save_face(folder / utk(23, 103), 23, size=(10, 10))  # tiny
    png = bytearray((save_face(tmp_path / "x.png", 24, "RGBA")).read_bytes())
    png[60:120] = bytes(60)  # corrupt compressed data: "broken data stream"
    (folder / utk(24, 104)).write_bytes(bytes(png))  # unreadable
    os.symlink(folder / "gone.jpg", folder / utk(26, 105))  # missing (dangling link)
    # Names that do not parse (raw UTKFace has these) and an age beyond 100.
    for name in ["39_1_20170116174525125.jpg.chip.jpg",
                 "55_0_0_20170116232725357jpg.chip.jpg",
                 "24_0_1_20170116220224657 .jpg.chip.jpg"]:
        save_face(folder / name, 40)
    save_face(folder / utk(116, 106), 50)
    (folder / "README.txt").write_text("ignored: not an image name\n")
    return folder


def check_aligned(ds):
    for image, age, path in zip(ds.images, ds.ages, ds.paths):
        assert abs(centre(image) - value(age)) <= 2, (path, age, centre(image))


# --------------------------------------------------------------------------- UTKFace


def test_utkface_counts_skips_and_alignment(utk_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(imaging, "CHUNK", 4)  # several parallel chunks even on tiny data
    ds = load_dataset(utk_folder, cache_dir=tmp_path / "cache", workers=2, progress=False)
    s = ds.summary
    assert s.kind == "utkface" and s.listed == 22
    assert s.dropped.counts == {"unparsable name": 3, "age outside 0-100": 1}
    assert s.skipped.counts == {"missing": 1, "zero-byte": 1, "not an image": 1,
                                "truncated": 1, "unreadable": 1, "tiny (< 16 px)": 1}
    assert s.skipped.examples["zero-byte"] == [utk(20, 100)]
    assert len(ds) == len(GOOD) == s.num_faces
    assert sorted(ds.ages.tolist()) == [age for age, _, _ in GOOD]
    assert ds.images.shape == (12, 64, 64, 3) and ds.images.dtype == np.uint8
    assert ds.ages.dtype == np.float32 and ds.categories.dtype == np.int64
    assert (ds.identities == "").all()
    check_aligned(ds)
    assert [Path(p).name.split("_")[0] for p in ds.paths] == [str(int(a)) for a in ds.ages]
    np.testing.assert_array_equal(ds.categories, AgeBins.parse(None).category(ds.ages))
    text = s.format()
    for needle in ["unparsable name", "truncated", utk(22, 102), "60+", "Cache:"]:
        assert needle in text


def test_parallel_and_serial_decoding_agree(utk_folder, monkeypatch):
    monkeypatch.setattr(imaging, "CHUNK", 4)
    paths = [str(p) for p in sorted(utk_folder.iterdir()) if p.name.endswith("chip.jpg")]
    serial, failed = imaging.decode_all(paths, 32, workers=1, progress=False)
    threads, failed_t = imaging.decode_all(paths, 32, workers=2, progress=False)
    procs, failed_p = imaging.decode_all(paths, 32, workers=2, progress=False, executor="process")
    assert failed == failed_t == failed_p and len(failed) == 6
    np.testing.assert_array_equal(serial, threads)
    np.testing.assert_array_equal(serial, procs)


def test_utkface_reader_names(utk_folder):
    listing = read_utkface(utk_folder)
    assert listing.listed == 22 and len(listing) == 18
    assert "README.txt" not in listing.names
    assert listing.dropped.examples["unparsable name"][0].startswith("24_0_1_")


def test_decode_modes(tmp_path):
    rgba = Image.new("RGBA", (32, 32), (10, 20, 30, 0))  # fully transparent -> white
    rgba.save(tmp_path / "clear.png")
    assert (decode_face(str(tmp_path / "clear.png"), 16) == 255).all()
    p = Image.new("P", (32, 32), 0)
    p.putpalette([0, 0, 0, 50, 50, 50] + [0] * 762)
    p.paste(1, (8, 8, 24, 24))
    p.save(tmp_path / "p.png", transparency=0)
    out = decode_face(str(tmp_path / "p.png"), 32)
    assert (out[0, 0] == 255).all() and (out[16, 16] == 50).all()
    upside_down = np.zeros((32, 32, 3), np.uint8)
    upside_down[16:] = 200
    exif = Image.Exif()
    exif[0x0112] = 3  # Orientation: rotate 180 degrees to display
    Image.fromarray(upside_down).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = decode_face(str(tmp_path / "rot.jpg"), 32)
    assert out[4].mean() > 190 and out[-4].mean() < 10
    with pytest.raises(imaging.SkipImage) as info:
        decode_face(str(tmp_path / "nowhere.jpg"), 16)
    assert info.value.reason == imaging.MISSING


# --------------------------------------------------------------------------- IMDB-Wiki


def matlab_date(year, month, day):
    return float(datetime.date(year, month, day).toordinal() + 366)


def write_wiki(folder):
    """A tiny wiki.mat like the real one (cell arrays of strings, 1xN numbers)."""
    nan, inf = np.nan, np.inf
    rows = [  # path, dob, taken, face, second, name, expected age or None
        ("00/alice_1.jpg", matlab_date(1981, 5, 5), 2009, 2.5, nan, "Alice", 28),
        ("01/bob.jpg", matlab_date(1981, 7, 1), 2009, 1.0, nan, "Bob", 27),  # July: minus 1
        ("02/nodob.jpg", nan, 2009, 3.0, nan, "Carol", None),
        ("03/noface.jpg", matlab_date(1970, 1, 1), 2009, -inf, nan, "Dan", None),
        ("04/two.jpg", matlab_date(1970, 1, 1), 2009, 3.0, 2.1, "Eve", None),
        ("05/minus3.jpg", matlab_date(2012, 1, 1), 2009, 3.0, nan, "Fay", None),
        ("06/old.jpg", matlab_date(1879, 1, 1), 2009, 3.0, nan, "Gus", None),
        ("07/anon.jpg", matlab_date(1960, 12, 31), 2006, 1.7, nan, "", 45),
        ("08/alice_2.jpg", matlab_date(1981, 5, 5), 2041, 4.0, nan, "Alice", 60),
        ("09/lost.jpg", matlab_date(1990, 1, 1), 2010, 4.0, nan, "Hal", 20),  # no file
    ]
    for path, *_, age in rows:
        if age is not None and "lost" not in path:
            save_face(folder / path, age)
    columns = list(zip(*rows))
    scipy.io.savemat(folder / "wiki.mat", {"wiki": {
        "full_path": np.array(columns[0], dtype=object),
        "dob": np.array(columns[1], dtype=np.float64),
        "photo_taken": np.array(columns[2], dtype=np.float64),
        "face_score": np.array(columns[3], dtype=np.float64),
        "second_face_score": np.array(columns[4], dtype=np.float64),
        "name": np.array(columns[5], dtype=object),
    }})
    return folder / "wiki.mat"


def test_matlab_dates():
    year, month = matlab_birth_year_month(np.array([matlab_date(1981, 5, 5), 723671.0]))
    assert year.tolist()[0] == 1981 and month.tolist()[0] == 5
    expected = datetime.date.fromordinal(723671 - 366)
    assert (year[1], month[1]) == (expected.year, expected.month)


def test_imdb_wiki_cleaning(tmp_path):
    mat = write_wiki(tmp_path / "wiki_crop")
    listing = read_imdb_wiki(mat)
    assert listing.listed == 10
    assert listing.dropped.counts == {"no face (face_score < 1)": 1, "second face": 1,
                                      "no date of birth": 1, "age outside 0-100": 2}
    assert listing.ages.tolist() == [28, 27, 45, 60, 20]
    assert listing.identities == ["Alice", "Bob", "", "Alice", "Hal"]

    assert find_source(tmp_path / "wiki_crop").kind == "imdb-wiki"
    ds = load_dataset(tmp_path / "wiki_crop", cache_dir=False, test_fraction=0.5, progress=False)
    assert len(ds) == 4 and ds.summary.skipped.counts == {"missing": 1}
    assert ds.summary.skipped.examples["missing"] == ["09/lost.jpg"]
    check_aligned(ds)
    alice = ds.is_test[ds.identities == "Alice"]
    assert alice.all() or not alice.any()
    assert ds.summary.split_by == "identity"


def test_mat_without_struct(tmp_path):
    scipy.io.savemat(tmp_path / "other.mat", {"faces": np.zeros(3)})
    with pytest.raises(ValueError, match="'wiki' or 'imdb'"):
        read_imdb_wiki(tmp_path / "other.mat")


# --------------------------------------------------------------------------- CSV and split


@pytest.fixture
def csv_file(tmp_path):
    lines = ["path,age,identity"]
    for person in range(8):
        for k in range(3):
            age = 18 + 7 * person + k
            save_face(tmp_path / f"img/p{person}_{k}.png", age, size=(24, 24))
            lines.append(f"img/p{person}_{k}.png,{age}.0,person{person}")
    lines += ["img/absent.png,33,person9", "img/p0_0.png,abc,person0", ",40,x",
              "img/p1_1.png,130,person1", ""]
    (tmp_path / "faces.csv").write_text("\n".join(lines))
    return tmp_path / "faces.csv"


def test_csv_reader_and_split_by_identity(csv_file):
    listing = read_csv(csv_file)
    assert listing.listed == 28 and len(listing) == 25
    assert listing.dropped.counts == {"unreadable age": 1, "empty path": 1,
                                      "age outside 0-100": 1}
    ds = load_dataset(csv_file, image_size=16, cache_dir=False, test_fraction=0.25,
                      seed=3, progress=False)
    assert len(ds) == 24 and ds.summary.skipped.counts == {"missing": 1}
    assert ds.images.shape == (24, 16, 16, 3)
    check_aligned(ds)
    train, test = set(ds.train().identities), set(ds.test().identities)
    assert train and test and not train & test
    assert len(ds.train()) + len(ds.test()) == len(ds)
    assert abs(len(ds.test()) - 6) <= 3  # whole people, about a quarter of the faces


def test_csv_bad_header(tmp_path):
    (tmp_path / "x.csv").write_text("file,years\na.jpg,3\n")
    with pytest.raises(ValueError, match="expected columns path, age"):
        read_csv(tmp_path / "x.csv")


def test_csv_not_in_utf8_is_named(tmp_path):
    (tmp_path / "faces.csv").write_bytes("path,age\nJos\xe9.jpg,30\n".encode("latin-1"))
    with pytest.raises(ValueError, match="faces.csv is not UTF-8 text .*iconv"):
        load_dataset(tmp_path / "faces.csv", cache_dir=False, progress=False)
    with pytest.raises(ValueError, match="faces.csv is not UTF-8 text"):
        load_dataset(tmp_path, cache_dir=False, progress=False)  # the folder holding it


def test_csv_cache_sees_the_image_files(csv_file, tmp_path):
    cache_dir = tmp_path / "cache"

    def load():
        return load_dataset(csv_file, image_size=16, cache_dir=cache_dir, progress=False)

    first = load()
    assert first.summary.skipped.counts == {"missing": 1} and load().summary.cache_hit
    save_face(csv_file.parent / "img" / "absent.png", 33, size=(24, 24))  # the missing one, added
    added = load()
    assert not added.summary.cache_hit and len(added) == len(first) + 1
    assert not added.summary.skipped.counts
    face = csv_file.parent / "img" / "p0_0.png"
    os.utime(face, ns=(face.stat().st_atime_ns, face.stat().st_mtime_ns + 10**9))  # replaced
    assert not load().summary.cache_hit


def test_split_is_seeded_grouped_and_sized():
    keys = [f"person{i % 100}" for i in range(1000)]
    first = split_test(keys, 0.1, seed=0)
    np.testing.assert_array_equal(first, split_test(keys[::-1], 0.1, seed=0)[::-1])
    assert not np.array_equal(first, split_test(keys, 0.1, seed=1))
    assert first.sum() == 100  # groups of 10: exactly a tenth
    for person in set(keys):
        side = first[np.array(keys) == person]
        assert side.all() or not side.any()
    assert not split_test(keys, 0.0).any()


# --------------------------------------------------------------------------- cache


def test_cache_round_trip(utk_folder, tmp_path):
    cache_dir = tmp_path / "cache"
    first = load_dataset(utk_folder, cache_dir=cache_dir, workers=1, progress=False)
    again = load_dataset(utk_folder, cache_dir=cache_dir, workers=1, progress=False)
    assert not first.summary.cache_hit and again.summary.cache_hit
    assert first.summary.cache_path == again.summary.cache_path
    for field in ("images", "ages", "categories", "identities", "paths", "is_test"):
        np.testing.assert_array_equal(getattr(first, field), getattr(again, field))
    assert again.summary.skipped.to_dict() == first.summary.skipped.to_dict()
    assert again.summary.dropped.counts == first.summary.dropped.counts
    files = list(cache_dir.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"  # no temporary file left
    with np.load(files[0], allow_pickle=False) as stored:
        assert all(stored[name].dtype != object for name in stored.files)

    files[0].write_bytes(b"PK\x03\x04 not really a zip")  # a damaged cache is rebuilt
    with pytest.warns(UserWarning, match="unreadable face cache"):
        rebuilt = load_dataset(utk_folder, cache_dir=cache_dir, workers=1, progress=False)
    assert not rebuilt.summary.cache_hit
    np.testing.assert_array_equal(rebuilt.images, first.images)
    json.dumps(rebuilt.summary.to_dict())

    other_size = load_dataset(utk_folder, image_size=32, cache_dir=cache_dir, progress=False)
    assert not other_size.summary.cache_hit and other_size.images.shape[1:] == (32, 32, 3)
    save_face(utk_folder / utk(33, 200), 33)  # a new file changes the source signature
    grown = load_dataset(utk_folder, cache_dir=cache_dir, workers=1, progress=False)
    assert not grown.summary.cache_hit and len(grown) == len(first) + 1
    assert len(list(cache_dir.iterdir())) == 3


def test_default_cache_dir_from_environment(utk_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("AGE_CGAN_CACHE", str(tmp_path / "envcache"))
    ds = load_dataset(utk_folder, workers=1, progress=False)
    assert Path(ds.summary.cache_path).parent == tmp_path / "envcache"


def test_custom_bins_with_gaps(utk_folder):
    ds = load_dataset(utk_folder, age_bins="20-30,40-50", cache_dir=False, progress=False)
    assert sorted(ds.ages.tolist()) == [25, 30, 41, 47]
    assert ds.summary.dropped.counts["age in no category"] == 8
    assert ds.num_ages == 2 and set(ds.categories.tolist()) == {0, 1}


# --------------------------------------------------------------------------- errors


def test_unrecognised_source(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="expected one of"):
        find_source(tmp_path)
    with pytest.raises(FileNotFoundError):
        find_source(tmp_path / "absent")


def test_no_usable_face(tmp_path):
    folder = tmp_path / "utk"
    folder.mkdir()
    (folder / utk(30, 1)).write_bytes(b"")
    (folder / utk(31, 2)).write_text("text")
    with pytest.raises(NoFacesError, match="no usable face") as info:
        load_dataset(folder, cache_dir=False, progress=False)
    assert "zero-byte" in str(info.value)


def test_command_line(utk_folder, tmp_path, capsys):
    assert data_main([str(utk_folder), "--cache-dir", str(tmp_path / "c"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Faces per age category" in out and "19-29" in out and "zero-byte" in out
    assert data_main([str(tmp_path / "absent")]) == 2
    assert "expected one of" in capsys.readouterr().err


def test_import_is_backend_free():
    code = ("import sys, age_cgan.data; "
            "print([m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------- batches


def test_normalize_pair():
    pixels = np.arange(256, dtype=np.uint8)
    scaled = normalize(pixels)
    assert scaled.dtype == np.float32 and scaled.min() == -1 and scaled.max() == 1
    np.testing.assert_array_equal(denormalize(scaled), pixels)
    assert denormalize(np.array([-3.0, 3.0])).tolist() == [0, 255]


def make_sampler(n=50, batch=8, seed=5, **kw):
    images = np.zeros((n, 4, 4, 3), np.uint8)
    images[:, :, :2] = np.arange(n, dtype=np.uint8)[:, None, None, None]  # left half = row id
    images[:, :, 2:] = 255
    return BatchSampler(images, np.arange(n) % 3, 3, batch, seed=seed, **kw)


def test_sampler_epochs_flips_and_labels():
    sampler = make_sampler()
    assert sampler.steps_per_epoch == 6
    seen, flipped = [], 0
    for _ in range(6):
        batch = sampler.next()
        assert batch["image"].shape == (8, 4, 4, 3) and batch["image"].dtype == np.float32
        assert batch["age"].shape == (8, 3) and (batch["age"].sum(1) == 1).all()
        pixels = denormalize(batch["image"])
        left_is_id = pixels[:, 0, 0, 0] != 255
        flipped += int((~left_is_id).sum())
        ids = np.where(left_is_id, pixels[:, 0, 0, 0], pixels[:, 0, 3, 0])
        np.testing.assert_array_equal(batch["age"].argmax(1), ids % 3)
        seen += ids.tolist()
    assert len(set(seen)) == 48 and sampler.epoch == 0  # no row twice in an epoch
    assert 0 < flipped < 48
    sampler.next()
    assert sampler.epoch == 1
    plain = make_sampler(flip=False).next()
    assert (denormalize(plain["image"])[:, :, 2:] == 255).all()


def test_sampler_is_seeded_and_resumes_exactly():
    a, b = make_sampler(seed=1), make_sampler(seed=1)
    np.testing.assert_array_equal(a.next()["image"], b.next()["image"])
    assert not np.array_equal(a.next()["image"], make_sampler(seed=2).next()["image"])
    for _ in range(9):  # into the second epoch
        a.next()
    state = json.loads(json.dumps(a.get_state()))
    expected = [a.next() for _ in range(10)]
    resumed = make_sampler(seed=99)
    resumed.set_state(state)
    assert resumed.epoch == 1
    for batch in expected:
        got = resumed.next()
        np.testing.assert_array_equal(got["image"], batch["image"])
        np.testing.assert_array_equal(got["age"], batch["age"])


def test_sampler_on_indices():
    sampler = make_sampler(indices=np.arange(50) < 20)
    ids = set()
    for _ in range(sampler.steps_per_epoch):
        pixels = denormalize(sampler.next()["image"])
        ids |= set(np.minimum(pixels[:, 0, 0, 0], pixels[:, 0, 3, 0]).tolist())
    assert ids <= set(range(20)) and sampler.steps_per_epoch == 2


# --------------------------------------------------------------------------- shared data


def test_shared_utkface_names():
    folder = SHARED_UTKFACE / "images"
    if not folder.is_dir():
        pytest.skip("../shared/data/utkface64 is not present in this checkout")
    assert find_source(SHARED_UTKFACE).path == folder.resolve()
    listing = read_utkface(folder)
    assert listing.listed == 22182
    assert listing.dropped.counts == {"age outside 0-100": 20}  # UTKFace ages run to 116
    paths = listing.paths()[:40]
    faces, failures = imaging.decode_all(paths, 64, workers=1, progress=False)
    assert not failures and faces.shape == (40, 64, 64, 3)


def test_atomic_path_replaces_whole_or_not_at_all(tmp_path):
    from age_cgan.files import atomic_path

    target = tmp_path / "out" / "model.npz"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second and first.suffix == ".npz"  # two writers never share a temp file
        first.write_bytes(b"one")
        second.write_bytes(b"two")
    assert target.read_bytes() == b"one"  # the last rename wins, with a whole file
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temp:
            temp.write_bytes(b"half")
            raise RuntimeError("crash while writing")
    assert target.read_bytes() == b"one"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.npz"]
