"""The picture of one aged face, as infer.py writes it and the page shows it: one labelled row
``input | the face at its own age | each target age``, and optionally each image on its own.
No Keras import: it draws an ``AgedFace`` (``aging.result``) that is already made.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from age_cgan.errors import AgeCganError, setting
from age_cgan.visualize import labelled_grid, made_here, save_image, save_png


class WouldReplace(AgeCganError, FileExistsError):
    """An output would replace a file this project did not write (``visualize.made_here``)."""

    def __init__(self, path):
        self.path = Path(path)
        super().__init__(f"{path} exists and was not written by age-cgan: pass "
                         f"{setting('overwrite', True)} to replace it, or choose another "
                         f"{setting('out')}")


def check_replace(path, overwrite: bool) -> None:
    """Raise WouldReplace when ``path`` is a file this project did not write (a photo, any
    other file), unless ``overwrite``; a grid of an earlier run is replaced without asking."""
    path = Path(path)
    if not overwrite and path.exists() and not (path.is_file() and made_here(path)):
        raise WouldReplace(path)


def own_age_label(aged) -> str:
    """The grid's header over the face at its own age, on two lines: how that age was found
    (the --json keys join the lines with a space)."""
    how = "given" if aged.source_given else "estimated"
    return f"own age\n({how} {aged.source_label})"


def grid_images(aged) -> list:
    """input | reconstruction | each age, uint8 (S, S, 3) each, at the crop's own size where
    the method added its change there (the reconstruction of ``difference`` is G's 64 px
    pivot)."""
    if aged.aged_detail is None:
        return [aged.face, aged.reconstruction, *aged.aged]
    recon = aged.reconstruction if aged.reconstruction_detail is None \
        else aged.reconstruction_detail
    return [aged.detail, recon, *aged.aged_detail]


def aged_grid(aged, zoom: int):
    """(the labelled grid uint8 (H, W, 3), its images, their labels): each image enlarged
    ``zoom`` times from the model's side (bicubic), or kept at the crop's side if larger."""
    images = grid_images(aged)
    labels = ["input", own_age_label(aged), *aged.labels]
    size = max(aged.face.shape[0] * zoom, images[0].shape[0])
    images = [i if i.shape[0] == size else
              np.asarray(Image.fromarray(i).resize((size, size), Image.Resampling.BICUBIC))
              for i in images]
    return labelled_grid(np.stack(images), 1, len(images), labels), images, labels


def write_aged(aged, grid_path: Path, zoom: int, separate: bool,
               overwrite: bool = True) -> dict:
    """Write the grid to ``grid_path`` (.png or .jpg, ``visualize.FORMATS``) and, with
    ``separate``, each image as a PNG in a folder beside it; returns their paths. Without
    ``overwrite`` a file this project did not write is never replaced (WouldReplace)."""
    grid, images, labels = aged_grid(aged, zoom)
    check_replace(grid_path, overwrite)
    paths, names = {"grid": str(grid_path)}, None
    if separate:
        folder = grid_path.with_suffix("")
        names = [folder / f"{name.replace('+', 'plus')}.png" for name in
                 ["input", "own_age", *(f"age_{label}" for label in aged.labels)]]
        for path in names:
            check_replace(path, overwrite)
    save_image(grid, grid_path, "the aged grid")
    if separate:
        paths["images"] = {}
        for path, label, image in zip(names, labels, grid_images(aged)):
            save_png(image, path, "an aged face")
            paths["images"][label.replace("\n", " ")] = str(path)
    return paths


__all__ = ["WouldReplace", "aged_grid", "check_replace", "grid_images", "own_age_label",
           "write_aged"]
