"""Image grids for TensorBoard, sample PNGs and infer.py: uint8 in, uint8 out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from age_cgan.files import atomic_path

LABEL_HEIGHT = 14


def image_grid(images: np.ndarray, rows: int, cols: int, pad: int = 2) -> np.ndarray:
    """Tile uint8 images (rows * cols, H, W, 3), row-major, into one (rows*(H+pad)+pad, ...) image."""
    images = np.asarray(images)
    n, h, w, c = images.shape
    if n != rows * cols:
        raise ValueError(f"{n} images do not fill a {rows}x{cols} grid")
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for index, image in enumerate(images):
        r, k = divmod(index, cols)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        grid[top : top + h, left : left + w] = image
    return grid


def labelled_grid(images: np.ndarray, rows: int, cols: int, labels: list[str], pad: int = 2):
    """``image_grid`` with one text label above each column (e.g. the age ranges); a label
    with a line break takes two lines (the header grows by ``LABEL_HEIGHT`` a line)."""
    grid = image_grid(images, rows, cols, pad)
    cell = images.shape[2] + pad
    lines = [label.split("\n") for label in labels]
    height = LABEL_HEIGHT * max((len(parts) for parts in lines), default=1)
    canvas = Image.new("RGB", (grid.shape[1], grid.shape[0] + height), "white")
    canvas.paste(Image.fromarray(grid), (0, height))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for k, parts in enumerate(lines):
        for row, text in enumerate(parts):
            width = draw.textlength(text, font=font)
            draw.text((pad + k * cell + (cell - pad - width) / 2, 1 + row * LABEL_HEIGHT), text,
                      fill="black", font=font)
    return np.asarray(canvas)


#: What every image this project writes says it was made by (a PNG text chunk, a JPEG
#: comment): a command replaces a file of that name without asking, any other only when told.
MAKER = "age-cgan"
#: The image files a grid can be written as, by suffix: (Pillow format, its save options).
FORMATS = {".png": ("PNG", {}), ".jpg": ("JPEG", {"quality": 95}),
           ".jpeg": ("JPEG", {"quality": 95})}


def save_png(array: np.ndarray, path, what: str | None = None) -> None:
    """Write a uint8 (H, W, 3) array as PNG, atomically (temp name + rename); a refused write
    is ``files.WriteFailed`` naming ``path`` and ``what``."""
    save_image(array, path, what, ".png")


def save_image(array: np.ndarray, path, what: str | None = None, suffix: str | None = None):
    """``save_png`` in the format of ``path``'s suffix (``FORMATS``: PNG, or JPEG at quality
    95), marked as made by this project (``made_here``)."""
    from PIL import PngImagePlugin

    name, options = FORMATS[(suffix or Path(path).suffix).lower()]
    if name == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text("Software", MAKER)
        options = {"pnginfo": info}
    else:
        options = {**options, "comment": MAKER}
    with atomic_path(path, what) as tmp:
        Image.fromarray(np.asarray(array, dtype=np.uint8)).save(tmp, format=name, **options)


def made_here(path) -> bool:
    """Whether the image file ``path`` says it was written by this project (``save_image``)."""
    try:
        with Image.open(path) as image:
            mark = image.info.get("Software", image.info.get("comment", b""))
    except (OSError, ValueError, SyntaxError):
        return False
    return (mark.decode("latin-1") if isinstance(mark, bytes) else str(mark)) == MAKER
