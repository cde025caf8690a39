"""Shared test settings: quiet TensorFlow, small shapes, the shared data folder when present."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data():
    """../shared/data when this checkout has it (developers and CI); skip cleanly otherwise."""
    if not SHARED_DATA.is_dir():
        pytest.skip("needs the project's own data set beside this checkout (../shared/data: "
                    "prepared UTKFace and CACD-VS faces and photos; not part of the "
                    "repository): skipped, nothing is wrong with the install")
    return SHARED_DATA


def make_face_folder(folder, count=24, size=48, seed=0):
    """A UTKFace-style folder of small synthetic faces (AGE_GENDER_RACE_DATE.jpg.chip.jpg).

    Each image is a smooth colour blob whose brightness follows the age, so a GAN has
    something learnable; ages cycle through all six paper categories.
    """
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ages = [5, 24, 35, 44, 55, 70]
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(count):
        age = ages[i % len(ages)]
        blob = np.exp(-((yy - 0.5) ** 2 + (xx - 0.5) ** 2) * 8)[..., None]
        colour = rng.uniform(60, 200, 3) * (1 - age / 150)
        image = (blob * colour + (1 - blob) * 30 + rng.normal(0, 5, (size, size, 3))).clip(0, 255)
        Image.fromarray(image.astype("uint8")).save(folder / f"{age}_0_0_2017010{i:04d}.jpg.chip.jpg")
    return folder


@pytest.fixture(scope="session")
def tiny_faces(tmp_path_factory):
    return make_face_folder(tmp_path_factory.mktemp("faces") / "UTKFace")


#: Small but real settings for 2-step training runs on the CPU.
TINY = dict(image_size=32, batch_size=4, fr_weights="none", fr_input_size=75, log_every=1,
            sample_every=2, checkpoint_every=2, grid_rows=2, progress=False)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_faces):
    """A run folder with all three stages trained for 2 steps (TensorFlow backend)."""
    from age_cgan.config import TrainConfig
    from age_cgan.training import train

    run = tmp_path_factory.mktemp("runs") / "tiny"
    cache = tmp_path_factory.mktemp("cache")
    train(TrainConfig(stage="age-cgan", data=str(tiny_faces), run=str(run), steps=2,
                      data_cache=str(cache), **TINY))
    return run


def mixed_size_model(folder, side=128, seed=3):
    """A copy of the shipped model (age_cgan/pretrained/lite) whose aging network is an
    untrained ``side`` px one, its last convolution given small random weights so that its
    change is not zero; the other networks stay at 64 px. SHA256SUMS is written again, so the
    copy also verifies as a packaged model."""
    import shutil

    import numpy as np

    from age_cgan import networks
    from age_cgan.pretrained import CHECKSUMS, DEFAULT_MODEL, read_checksums, write_checksums
    from age_cgan.runs import RunFolder

    shutil.copytree(DEFAULT_MODEL, folder)
    network = networks.build_aging_network(side, 6, "lite")
    last = network.get_layer("light_and_colour")
    rng = np.random.default_rng(seed)
    last.set_weights([rng.normal(0, 0.05, w.shape).astype("float32")
                      for w in last.get_weights()])
    RunFolder(folder).save_model(network, "aging_network")
    write_checksums(folder, read_checksums(folder))
    assert (folder / CHECKSUMS).is_file()
    return folder
