"""Age prototypes: the build (balanced, reproducible, faces without landmarks counted), the file's
checks, the prototype method's invariants at any crop size, and the two-sample realism test."""

import zipfile

import numpy as np
import pytest
from PIL import Image

from age_cgan.aging.prototype import PrototypeAger, PrototypeStrengths
from age_cgan.data import load_dataset
from age_cgan.evaluation.metrics.realism import grouped_folds, paired_samples, two_sample_test
from age_cgan.prototypes import PrototypeFileError, Prototypes
from age_cgan.prototypes.build import balance_weights, build_prototypes, groups_of

AGES = (5, 24, 35, 45, 55, 70)
TEMPLATE = np.random.default_rng(3).uniform(0.25, 0.75, (68, 2)).astype(np.float32)


def _faces_folder(tmp_path, per_group=3):
    """UTKFace-named 128 px faces: every category x races 0-1 x both genders; older faces are
    greyer and rougher, so the prototypes have an age to find."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "faces"
    folder.mkdir()
    for a, age in enumerate(AGES):
        for race in (0, 1):
            for gender in (0, 1):
                for k in range(per_group):
                    base = np.array([200, 150, 120]) * (1 - 0.1 * a) + 20 * a
                    noise = rng.normal(0, 4 + 6 * a, (128, 128, 3))
                    face = np.clip(base + noise, 0, 255).astype(np.uint8)
                    name = f"{age}_{gender}_{race}_2017011{a}{race}{gender}{k:04d}.jpg.chip.jpg"
                    Image.fromarray(face).save(folder / name, quality=95)
    return folder


def _landmarks(faces):
    """Stand-in for dlib: the template, moved a little by each face's brightness; the first
    face has none (it must be counted and left out)."""
    shift = (np.asarray(faces, np.float32).mean(axis=(1, 2, 3)) / 255.0 - 0.5) * 0.02
    points = np.repeat(TEMPLATE[None], len(faces), axis=0) + shift[:, None, None]
    points[0] = np.nan
    return points


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prototypes")
    dataset = load_dataset(_faces_folder(tmp), 128, cache_dir=False, test_fraction=0.1,
                           progress=False)
    prototypes = build_prototypes(dataset, _landmarks, min_group=1, workers=1, progress=False)
    return dataset, prototypes, tmp


def test_groups_come_from_utkface_names_and_are_weighted_equally():
    assert groups_of(["30_1_2_2017.jpg.chip.jpg", "x/31_0_3_1.jpg", "photo.jpg"]).tolist() == \
        [5, 6, -1]
    categories = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    groups = np.array([0, 0, 0, 0, 0, 1, 1, 1])  # group 0: 3 + 2 faces, group 1: 1 + 2
    weights, kept = balance_weights(categories, groups, 2, min_group=1)
    assert kept == [0, 1]
    for c in (0, 1):  # each kept group weighs the same in each category
        for g in (0, 1):
            assert weights[(categories == c) & (groups == g)].sum() == pytest.approx(1.0)
    assert balance_weights(categories, groups, 2, min_group=2)[1] == [0]


def test_build_counts_faces_and_is_reproducible(built, tmp_path):
    dataset, prototypes, _ = built
    faces = prototypes.meta["faces"]
    assert faces["no landmarks found, left out"] == 1
    assert faces["used"] == sum(prototypes.meta["faces_per_category"]) > 0
    assert prototypes.image.shape == (6, 128, 128, 3)
    assert prototypes.band_magnitude.shape == (6, 4, 64, 64)
    # older faces of the fixture are rougher: the prototypes' fine texture grows with age
    fine = prototypes.band_magnitude[:, 1].mean(axis=(1, 2))
    assert fine[-1] > 2 * fine[0]
    a, b = prototypes.save(tmp_path / "a.npz"), prototypes.save(tmp_path / "b.npz")
    assert a.read_bytes() == b.read_bytes()
    again = Prototypes.load(a, dataset.bins.spec)
    assert np.allclose(again.image, prototypes.image, atol=2e-3)
    assert again.meta["faces_sha256"] == prototypes.meta["faces_sha256"]
    assert a.stat().st_size < 1_000_000


def test_a_bad_prototype_file_is_named(built, tmp_path):
    _, prototypes, _ = built
    with pytest.raises(PrototypeFileError, match="no age prototype file"):
        Prototypes.load(tmp_path / "missing.npz")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip")
    with pytest.raises(PrototypeFileError, match="broken.npz is not a readable"):
        Prototypes.load(broken)
    path = prototypes.save(tmp_path / "p.npz")
    with pytest.raises(PrototypeFileError, match="built for the age categories"):
        Prototypes.load(path, "0-30,31-60,61+")
    cut = tmp_path / "cut.npz"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(cut, "w") as dst:
        for item in src.infolist():
            if item.filename != "shape.npy":
                dst.writestr(item, src.read(item))
    with pytest.raises(PrototypeFileError, match="cut.npz is not a readable"):
        Prototypes.load(cut)


@pytest.mark.parametrize("side", [40, 128, 200])
def test_the_method_keeps_size_grey_and_the_own_age(built, side):
    _, prototypes, _ = built
    ager = PrototypeAger(prototypes)
    rng = np.random.default_rng(side)
    colour = rng.integers(60, 200, (side, side, 3), dtype=np.uint8)
    out = ager.age(colour, 2, range(6))
    assert out.shape == (6, side, side, 3) and out.dtype == np.uint8
    assert np.array_equal(out[2], colour)  # its own category: the photo itself
    assert np.abs(out[5].astype(int) - colour).mean() > 1  # another: changed
    grey = np.repeat(rng.integers(40, 220, (side, side, 1), dtype=np.uint8), 3, axis=-1)
    aged = ager.age(grey, 1, [0, 5]).astype(int)
    assert np.abs(aged - aged[..., :1]).max() <= 1  # no tint on a grey photo
    weaker = PrototypeAger(prototypes).age(colour, 2, [5], strength=0.0)[0]
    assert np.abs(weaker.astype(int) - colour).max() <= 1  # strength 0 changes nothing


def test_strengths_scale_and_read_from_a_config():
    s = PrototypeStrengths.from_config({"colour": 2, "per_target": [1, 1, 1, 1, 1, 2],
                                        "unknown": 5})
    assert s.colour == 2.0 and s.per_target == (1.0,) * 5 + (2.0,)
    half = s.scaled(0.5)
    assert half.colour == 1.0 and half.younger == s.younger and half.per_target == s.per_target


def test_two_sample_folds_are_grouped_and_the_test_tells_what_differs():
    rng = np.random.default_rng(0)
    n, a, side = 24, 3, 16
    sources = np.arange(n) % a
    real = rng.integers(90, 160, (n, side, side, 3), dtype=np.uint8)
    same = np.repeat(real[:, None], a, axis=1)  # "aged" = the photo itself
    images, labels, groups = paired_samples(same, sources, real, sources, np.arange(n))
    assert len(images) == 2 * n * (a - 1) and labels.mean() == 0.5
    partial = sources < 2  # real faces of categories 0 and 1 only: target 2 is left out
    images3, labels3, _ = paired_samples(same, sources, real[partial], sources[partial])
    assert len(images3) == 2 * int(np.sum(sources != 0) + np.sum(sources != 1))
    folds = grouped_folds(groups, 4, seed=1)
    for g in np.unique(groups):  # a face and its aged siblings never straddle folds
        assert len(np.unique(folds[groups == g])) == 1
    striped = same.copy()
    striped[..., ::2, :, :] = 255  # a painted pattern: trivial to tell
    images2, labels2, groups2 = paired_samples(striped, sources, real, sources, np.arange(n))
    told = two_sample_test(images2, labels2, groups2, folds=3, seeds=1, epochs=8)
    assert told["accuracy"] > 0.9
    untold = two_sample_test(images, labels, groups, folds=3, seeds=1, epochs=8)
    assert untold["accuracy"] < 0.75


def test_the_shipped_model_ages_a_photo_by_its_prototypes_at_the_crops_size(tmp_path, capsys):
    import json
    import shutil

    from age_cgan.aging import AgingModels
    from age_cgan.cli.infer import main
    from age_cgan.examples import PORTRAIT
    from age_cgan.pretrained import verified_run

    models = AgingModels.from_run(verified_run())
    assert models.default_method()[0] == "prototype"
    rng = np.random.default_rng(0)
    face = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    detail = np.asarray(Image.fromarray(face).resize((150, 150)))
    grey = np.repeat(detail.mean(axis=-1, keepdims=True), 3, axis=-1).astype(np.uint8)
    aged = models.age(face, "prototype", detail=grey, source_age=25)
    assert aged.aged_detail.shape == (6, 150, 150, 3) and aged.aged.shape == (6, 64, 64, 3)
    assert np.array_equal(aged.aged_detail[1], grey)  # 19-29: the photo itself
    spread = aged.aged_detail.max(axis=-1).astype(int) - aged.aged_detail.min(axis=-1)
    assert spread.max() <= 1  # a grey photo stays grey
    # a damaged prototype file in a model folder: named in one line, the network used instead
    copy = tmp_path / "model"
    shutil.copytree(verified_run(), copy)
    (copy / "prototypes.npz").write_bytes(b"damaged")
    assert main([str(PORTRAIT), "--run", str(copy), "--out", str(tmp_path / "a.png"),
                 "--json", str(tmp_path / "a.jsonl")]) == 0
    err = capsys.readouterr().err
    assert "prototypes.npz is not a readable age prototype file" in err
    assert "using the aging network" in err
    assert json.loads((tmp_path / "a.jsonl").read_text())["method"] == "network"
    # given explicitly, a bad file is refused in one line
    assert main([str(PORTRAIT), "--prototypes", str(copy / "prototypes.npz"),
                 "--out", str(tmp_path / "b.png")]) == 2
    assert "is not a readable age prototype file" in capsys.readouterr().err
