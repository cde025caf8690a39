"""A run is a folder: its layout, its config, and loading its trained networks.

```
RUN/config.json                  the resolved settings of the run (image size, z, age bins, ...)
RUN/models/<network>.keras       the latest finished weights of each network (encoder, generator,
                                 discriminator, face_recognizer), written at the end of a stage
RUN/stage<N>/                    TensorBoard events, checkpoint.npz, samples/*.png, metrics.jsonl
```
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from age_cgan.ages import AgeBins
from age_cgan.files import atomic_path

if TYPE_CHECKING:
    import keras

NETWORKS = ("encoder", "generator", "discriminator", "face_recognizer")
WHICH_STAGE = {
    "generator": "1",
    "discriminator": "1",
    "encoder": "2",
    "face_recognizer": "fr",
}


class RunFolderError(RuntimeError):
    """A run folder lacks what a stage or a tool needs; the message says what and how to fix."""


def write_json_atomic(path, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def load_dataset_for_run(config: dict, data=None, progress: bool = True):
    """The run's faces, decoded and split exactly as training does (config "data",
    "image_size", "age_bins", "test_fraction", "seed", "data_cache"); ``data`` replaces
    config "data"."""
    from age_cgan.data import load_dataset

    data = data or config.get("data")
    if not data:
        raise ValueError("no data given: pass --data PATH (a UTKFace folder, wiki.mat / "
                         "imdb.mat, or a CSV of path,age)")
    return load_dataset(
        data, image_size=int(config.get("image_size", 64)), age_bins=config.get("age_bins"),
        cache_dir=config.get("data_cache"), test_fraction=float(config.get("test_fraction", 0.1)),
        seed=int(config.get("seed", 0)), progress=progress)


class RunFolder:
    def __init__(self, path):
        self.path = Path(path)

    # --- layout -------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    def model_path(self, network: str) -> Path:
        return self.path / "models" / f"{network}.keras"

    def stage_dir(self, stage) -> Path:
        return self.path / f"stage{stage}"

    # --- config -------------------------------------------------------------------------------
    def read_config(self) -> dict:
        if not self.config_path.is_file():
            raise RunFolderError(
                f"{self.path} is not a run folder (no config.json); train one with "
                f"`python train.py --stage 1 --data PATH --run {self.path}`"
            )
        return json.loads(self.config_path.read_text())

    def write_config(self, config: dict) -> None:
        write_json_atomic(self.config_path, config)

    def age_bins(self) -> AgeBins:
        return AgeBins.parse(self.read_config()["age_bins"])

    # --- networks -----------------------------------------------------------------------------
    def has_model(self, network: str) -> bool:
        return self.model_path(network).is_file()

    def load_model(self, network: str) -> keras.Model:
        """Load ``models/<network>.keras`` safely; a clear error names the stage that makes it."""
        path = self.model_path(network)
        if not path.is_file():
            stage = WHICH_STAGE.get(network, "?")
            raise RunFolderError(
                f"{path} is missing: the run folder {self.path} has no trained {network}. "
                f"Run `python train.py --stage {stage} --run {self.path}` first."
            )
        import keras  # here, not at the top: reading a run's config needs no deep-learning stack

        from age_cgan import networks  # noqa: F401  (registers the custom layers for loading)

        try:
            return keras.saving.load_model(path, safe_mode=True, compile=False)
        except Exception as error:
            raise RunFolderError(f"cannot load {path}: {type(error).__name__}: {error}") from error

    def save_model(self, model: keras.Model, network: str) -> Path:
        """Write ``models/<network>.keras`` atomically (temp name + rename)."""
        path = self.model_path(network)
        with atomic_path(path) as tmp:
            model.save(tmp)
        return path
