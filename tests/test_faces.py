"""Face detection and cropping on real photos: the shipped portrait, odd modes, EXIF, errors."""

import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("dlib")

from age_cgan.examples import PORTRAIT  # noqa: E402  NASA, public domain (its README.md)
from age_cgan.faces import (  # noqa: E402
    FACE_FRACTION,
    Box,
    FaceDetector,
    NoFaceFound,
    PhotoTooSmall,
    UnreadablePhoto,
    crop_face,
    find_faces,
    list_photos,
)


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


@pytest.fixture(scope="module")
def portrait():
    return Image.open(PORTRAIT).convert("RGB")


def _save(image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def test_portrait_is_detected_and_cropped_like_a_training_face(detector):
    faces = find_faces(PORTRAIT, 64, detector)
    assert len(faces) == 1
    face = faces[0]
    assert face.image.shape == (64, 64, 3) and face.image.dtype == np.uint8
    # the face is in the upper middle of the 256x256 photo, not the whole photo
    assert 60 < (face.box.left + face.box.right) / 2 < 160
    assert 30 < (face.box.top + face.box.bottom) / 2 < 100
    assert face.crop_box.width == pytest.approx(face.box.width / FACE_FRACTION)
    assert face.crop_box.width < 128
    assert face.image.std() > 20  # a real crop, not a flat fill


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16"])
def test_any_image_mode(detector, portrait, tmp_path, mode):
    grey_first = mode in ("LA", "I;16")
    image = (portrait.convert("L") if grey_first else portrait).convert(mode)
    if mode == "RGBA":  # transparent margin: composited over white, face untouched
        alpha = np.full(image.size[::-1], 255, np.uint8)
        alpha[:, :20] = 0
        image.putalpha(Image.fromarray(alpha))
    suffix = ".jpg" if mode == "CMYK" else (".tif" if mode == "I;16" else ".png")
    path = _save(image, tmp_path / f"portrait{suffix}")
    faces = find_faces(path, 64, detector)
    assert len(faces) == 1 and faces[0].image.shape == (64, 64, 3)


def test_exif_rotation_is_applied(detector, portrait, tmp_path):
    stored = portrait.rotate(90, expand=True)  # as a camera held sideways stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = _save(stored, tmp_path / "sideways.jpg", exif=exif, quality=95)
    upright = find_faces(PORTRAIT, 64, detector)[0].image.astype(np.float32)
    rotated = find_faces(path, 64, detector)[0].image.astype(np.float32)
    assert np.mean(np.abs(rotated - upright)) < 12


def test_large_photo_boxes_are_in_full_resolution_pixels(detector, portrait, tmp_path):
    path = _save(portrait.resize((2048, 2048), Image.Resampling.BICUBIC), tmp_path / "big.jpg")
    small = find_faces(PORTRAIT, 64, detector)[0].box
    big = find_faces(path, 64, detector)[0].box
    assert big.width == pytest.approx(8 * small.width, rel=0.2)
    assert (big.left + big.right) / 2 == pytest.approx(4 * (small.left + small.right), rel=0.1)


def test_several_faces_largest_first(detector, portrait, tmp_path):
    canvas = Image.new("RGB", (448, 256), "white")
    canvas.paste(portrait.resize((192, 192)), (0, 32))
    canvas.paste(portrait, (192, 0))
    path = _save(canvas, tmp_path / "two.png")
    faces = find_faces(path, 64, detector)
    assert len(faces) == 2
    assert faces[0].box.left > 192 and faces[0].box.area > faces[1].box.area
    assert len(find_faces(path, 64, detector, all_faces=False)) == 1


def test_crop_outside_the_photo_continues_it_softly(portrait):
    crop = crop_face(portrait, Box(-50, -50, 100, 100), 32).astype(float)
    assert crop.shape == (32, 32, 3)
    corner, inside = crop[:8, :8], crop[16:, 16:]
    # the padded corner is a blurred mirror of the photo: smooth, not one colour, not streaks
    assert np.abs(np.diff(corner, axis=0)).mean() < np.abs(np.diff(inside, axis=0)).mean()
    assert corner.std(axis=(0, 1)).max() > 0.5


def test_no_face_names_the_file(detector, tmp_path):
    ramp = np.tile(np.linspace(0, 255, 200, dtype=np.uint8), (200, 1))
    path = _save(Image.fromarray(ramp), tmp_path / "wall.png")
    with pytest.raises(NoFaceFound, match="wall.png: no face found.*tighter crop"):
        find_faces(path, 64, detector)


def test_too_small(detector, portrait, tmp_path):
    path = _save(portrait.resize((40, 40)), tmp_path / "thumb.png")
    with pytest.raises(PhotoTooSmall, match=r"thumb.png: .*too small \(40x40"):
        find_faces(path, 64, detector)


@pytest.mark.parametrize("content, reason", [
    (b"", "empty"),
    (b"hello, not an image", "not an image"),
    ("truncated", "cannot read"),
])
def test_unreadable(detector, tmp_path, content, reason):
    if content == "truncated":
        buffer = io.BytesIO()
        Image.open(PORTRAIT).save(buffer, format="PNG")
        content = buffer.getvalue()[:3000]
    path = tmp_path / "photo.png"
    path.write_bytes(content)
    with pytest.raises(UnreadablePhoto, match=f"photo.png: .*{reason}"):
        find_faces(path, 64, detector)
    with pytest.raises(UnreadablePhoto, match="no such file"):
        find_faces(tmp_path / "missing.jpg", 64, detector)


def test_list_photos(tmp_path):
    (tmp_path / "b.jpg").write_bytes(b"x")
    (tmp_path / "a.PNG").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not a photo")
    (tmp_path / "empty").mkdir()
    photos, problems = list_photos([tmp_path, tmp_path / "empty", tmp_path / "gone.jpg"])
    assert [p.name for p in photos] == ["a.PNG", "b.jpg"]
    assert [reason.split(" ")[0] for _, reason in problems] == ["no", "no"]
    assert problems[1][0].endswith("gone.jpg")


# --- against the real data, when this checkout has ../shared/data ------------------------------


def test_detects_the_head_shots(detector, shared_data):
    photos = sorted((shared_data / "photos").glob("*.jpg"))
    assert len(photos) >= 100
    found = 0
    for path in photos:
        try:
            find_faces(path, 64, detector, all_faces=False)
            found += 1
        except NoFaceFound:
            pass
    assert found >= len(photos) - 1  # measured: 120 of 120


def test_crop_recovers_the_training_chip(detector, shared_data):
    """A UTKFace chip set into a larger photo is cropped back to (about) itself."""
    chips = sorted((shared_data / "utkface64" / "images").glob("*.jpg"))[::1000][:20]
    sides, shifts = [], []
    for path in chips:
        chip = Image.open(path).convert("RGB").resize((192, 192), Image.Resampling.BICUBIC)
        photo = Image.new("RGB", (384, 384), (128, 128, 128))
        photo.paste(chip, (96, 96))
        try:
            box = find_faces(photo, 64, detector)[0].crop_box
        except NoFaceFound:
            continue
        sides.append(box.width / 192)
        shifts.append(np.hypot((box.left + box.right) / 2 - 192, (box.top + box.bottom) / 2 - 192))
    assert len(sides) >= 15
    assert np.median(sides) == pytest.approx(1.0, abs=0.06)  # the margin of a training face
    assert np.median(shifts) / 192 < 0.04  # centred like one


def test_a_face_filling_the_frame_is_found(detector, portrait):
    box = find_faces(PORTRAIT, 64, detector)[0].box
    centre_x, centre_y, half = (box.left + box.right) / 2, (box.top + box.bottom) / 2, 0.35 * box.width
    close = portrait.crop((round(centre_x - half), round(centre_y - half),
                           round(centre_x + half), round(centre_y + half))).resize((300, 300))
    faces = find_faces(close, 64, detector)  # 0.7 of the face's box: HOG alone misses it
    assert len(faces) == 1
    assert faces[0].box.width == pytest.approx(300 / 0.7, rel=0.2)
    assert faces[0].image.std() > 20


def test_a_small_face_in_a_large_photo_is_found_and_sizes_are_the_photos(detector, portrait,
                                                                         tmp_path):
    rng = np.random.default_rng(0)
    canvas = Image.fromarray(rng.integers(90, 140, (225, 300, 3), dtype=np.uint8))
    canvas = canvas.resize((3000, 2250))
    box = find_faces(PORTRAIT, 64, detector)[0].box
    factor = 90 / box.width  # a 90 px face: ~31 px in the 1024 px search copy
    canvas.paste(portrait.resize((round(256 * factor),) * 2, Image.Resampling.BICUBIC), (2000, 1200))
    path = _save(canvas, tmp_path / "large.jpg", quality=90)
    face = find_faces(path, 64, detector)[0]
    assert face.box.width == pytest.approx(90, rel=0.2)
    assert face.box.left == pytest.approx(2000 + box.left * factor, abs=20)
    empty = _save(Image.new("RGB", (2100, 1600), (120, 110, 100)), tmp_path / "empty.jpg")
    with pytest.raises(NoFaceFound, match="no face found in this 2100x1600 photo"):
        find_faces(empty, 64, detector)  # the photo's size, not the reduced decoding's
