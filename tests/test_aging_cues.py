"""The texture bank: real older faces' skin detail moved onto a face aged to 40+, on its skin only,
never towards a younger category, never a tint; its file checked; its build on real faces."""

import json

import numpy as np
import pytest

from age_cgan.aging.prototype import PrototypeAger, PrototypeStrengths
from age_cgan.prototypes import fields
from age_cgan.prototypes.store import Prototypes
from age_cgan.prototypes.textures import BANDS, FILE, LAYOUT_SIDE, TextureBank
from conftest import REPO

SHIPPED = REPO / "age_cgan" / "pretrained" / "lite" / "prototypes.npz"


@pytest.fixture(scope="module")
def with_bank(tmp_path_factory):
    """The shipped prototypes in a folder beside a bank of stripes (easy to find again)."""
    import dataclasses

    folder = tmp_path_factory.mktemp("bank")
    prototypes = dataclasses.replace(Prototypes.load(SHIPPED), path=None)  # no bank beside
    path = prototypes.save(folder / "prototypes.npz")
    stripes = 0.2 * np.sin(np.arange(128) * 1.3)[None, :] * np.ones((128, 1))
    detail = np.repeat(stripes[None, None], BANDS, axis=1).repeat(6, axis=0)
    layout = np.eye(6, LAYOUT_SIDE ** 2, dtype=np.float32)
    group = np.array([(c, g) for c in (3, 4, 5) for g in (0, 1)], np.int16)
    np.savez_compressed(folder / FILE, detail=detail.astype(np.float16), layout=layout,
                        group=group, meta=np.array(json.dumps({"faces": []})))
    return Prototypes.load(path), prototypes


def _face(side=160, grey=False):
    rng = np.random.default_rng(0)
    base = fields.local_mean(rng.uniform(0.3, 0.8, (side, side, 3)), 3.0)
    if grey:
        base = np.repeat(base.mean(-1, keepdims=True), 3, -1)
    return np.clip(base * 255, 0, 255).astype(np.uint8)


def test_the_bank_adds_detail_on_the_skin_of_older_targets_only(with_bank):
    banked, plain = with_bank
    strengths = PrototypeStrengths(shape=0.0)
    ager = PrototypeAger(banked, strengths)
    assert ager.bank is not None and PrototypeAger(plain, strengths).bank is None
    face, side = _face(), 160
    points = banked.shape[1]  # a 19-29 face with its category's mean landmarks
    out = ager.age(face, 1, [0, 2, 5], points=points).astype(float)
    without = PrototypeAger(plain, strengths).age(face, 1, [0, 2, 5], points=points).astype(float)
    difference = np.abs(out - without).mean(-1)
    skin = fields.skin_mask(points, side, 3.4) > 0.9
    assert difference[..., skin][2].mean() > 3.0  # 60+: the stripes are on the skin
    eyes = np.zeros((side, side), bool)
    centre = (points[36:42].mean(0) * side).astype(int)
    eyes[centre[1] - 2:centre[1] + 3, centre[0] - 2:centre[0] + 3] = True
    assert difference[2][eyes].max() < 1.0  # the eyes are left as they are
    assert difference[0].max() < 1.0 and difference[1].max() < 1.0  # 0-18 and 30-39: none
    grey = ager.age(_face(grey=True), 1, [5], points=points)[0].astype(int)
    assert np.abs(grey - grey[..., :1]).max() <= 1  # detail is light, never a tint
    none = PrototypeAger(banked, PrototypeStrengths(shape=0.0, real_texture=0.0))
    assert np.array_equal(none.age(face, 1, [5], points=points), without[2:].astype(np.uint8))


def test_a_bad_bank_is_refused(tmp_path):
    np.savez(tmp_path / FILE, detail=np.full((2, BANDS, 8, 8), 300.0), layout=np.zeros((2, 64)),
             group=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="not a texture bank"):
        TextureBank(tmp_path / FILE)
    assert TextureBank.beside(tmp_path / "elsewhere" / "prototypes.npz") is None


def test_the_shipped_bank_holds_real_detail_of_every_older_group():
    bank = TextureBank.beside(SHIPPED)
    assert bank is not None
    assert sorted(set(map(tuple, bank.group.tolist()))) == [(c, g) for c in (3, 4, 5)
                                                             for g in (0, 1)]
    assert np.isfinite(bank.detail).all() and 0.005 < np.abs(bank.detail).mean() < 0.2


def test_the_bank_builds_from_real_faces(tmp_path, shared_data):
    pytest.importorskip("face_recognition_models")
    from age_cgan.ages import AgeBins
    from age_cgan.prototypes import textures

    reference = Prototypes.load(SHIPPED).reference_shape
    old = textures.CANDIDATES, textures.PER_GROUP
    textures.CANDIDATES, textures.PER_GROUP = 12, 2
    try:
        out = textures.build(shared_data / "utkface128", tmp_path / FILE, reference,
                             AgeBins.parse(None), progress=False)
    finally:
        textures.CANDIDATES, textures.PER_GROUP = old
    bank = TextureBank(out)
    assert bank.detail.shape[1:] == (BANDS, 128, 128) and 6 <= len(bank.detail) <= 12
    with np.load(out) as f:
        names = json.loads(str(f["meta"]))["faces"]
    assert not set(names) & textures.LOOKED_AT_AND_LEFT_OUT


def _head_photo(side=160):
    """A light face (the shipped prototypes' mean landmarks) under dark, strand-textured hair
    above the eyes and beside the face; lower down beside it a smooth (out-of-focus)
    background of the hair's colour."""
    from age_cgan.aging.hair import _below_hairline

    points = Prototypes.load(SHIPPED).shape[1]
    rng = np.random.default_rng(1)
    image = np.full((side, side, 3), 0.75, np.float32) * np.array([1.0, 0.85, 0.75], np.float32)
    outside = _below_hairline(points, side) < 0.1
    rows = np.arange(side)[:, None] * np.ones((1, side))
    hair = outside & (rows < points[36:48, 1].mean() * side)
    strands = 0.08 * np.sin(np.arange(side) * 2.1)[None, :] + rng.normal(0, 0.03, (side, side))
    image[hair] = (0.22 + strands[hair])[:, None] * np.array([1.0, 0.8, 0.6])
    background = outside & (rows > 0.75 * side)
    image[background] = 0.22 * np.array([1.0, 0.8, 0.6])
    return np.clip(image, 0, 1), points, hair, background


def test_hair_is_found_by_its_colour_and_strands_and_greys_without_a_tint():
    from age_cgan.aging.hair import _below_hairline, grey_hair, hair_mask

    image, points, hair, background = _head_photo()
    side = 160
    mask = hair_mask(image, points)
    head_hair = hair & (_below_hairline(points, side) < 0.1)
    assert mask[head_hair].mean() > 0.4  # the hair above and beside the face
    away = background & (fields.local_mean((~background).astype(np.float32), 6.0) < 0.01)
    assert away.sum() > 200  # (a background's few px beside an edge hold that edge's detail)
    assert mask[away].mean() < 0.1  # a smooth background of its colour is left out
    greyed = grey_hair(image, mask, 1.0)
    luma = fields.LUMA
    assert (greyed[head_hair] @ luma).mean() > (image[head_hair] @ luma).mean() + 0.2  # lighter
    chroma = np.abs(greyed - (greyed @ luma)[..., None])
    assert chroma[head_hair].mean() < 0.5 * np.abs(image - (image @ luma)[..., None])[
        head_hair].mean()  # and less coloured
    assert np.allclose(greyed[mask == 0], image[mask == 0], atol=1e-5)  # nothing else moves
    bald = np.full_like(image, 0.7)
    assert hair_mask(bald, points).max() == 0.0  # no hair above the brows: none greys


def test_a_face_without_landmarks_is_still_aged_and_says_how(monkeypatch):
    from PIL import Image

    from age_cgan.aging import AgingModels
    from age_cgan.faces import find_faces
    from age_cgan.pretrained import verified_run
    from age_cgan.prototypes import landmarks

    models = AgingModels.from_run(verified_run())
    face = find_faces(Image.open(REPO / "age_cgan" / "examples" / "astronaut.jpg"), 64,
                      all_faces=False)[0]
    own = models.age(face.image, "prototype", progress=False, detail=face.detail)
    assert own.record()["landmarks"] == "own"
    monkeypatch.setitem(landmarks._MODELS, "missing", "dlib's landmark model is not installed")
    mean = models.age(face.image, "prototype", progress=False, detail=face.detail)
    assert mean.record()["landmarks"] == "mean shape"
    assert mean.aged_detail.shape == own.aged_detail.shape
    assert np.abs(mean.aged_detail.astype(int) - face.detail).mean() > 1  # aged all the same
