"""What a training stage is: networks, updates, batches and samples, and a declaration of what
it needs from the run folder and what it trains.

Each ``Stage`` subclass declares ``needs`` (networks earlier stages trained, loaded from
``RUN/models/``) and ``trains`` (networks it changes and saves there), or computes them from the
config (``needs_for`` / ``trains_for``, e.g. stage 3 with ``finetune_generator``). The stage
graph (``training.graph``: which stage trains a network, what a stage lacks, the order checks
and the hints that name a stage to run first) derives from these declarations alone.

The generic runner (``training.orchestration.run_stage``) drives every stage the same way:
build (networks, optimisers, ``backend.Update`` list), restore or ``begin``, ``next_batch`` in
the step loop with ``samples`` for TensorBoard, ``before_final`` on the synced variables, the
trained networks saved, then ``finish`` for the stage's result. Batches are numpy from a seeded
Generator and sampler, both saved in checkpoints (``get_state`` / ``set_state``).
"""

from __future__ import annotations

import keras
import numpy as np

from age_cgan.ages import AgeBins
from age_cgan.data import BatchSampler, denormalize, normalize
from age_cgan.runs import RunFolder


class Stage:
    """Common parts: the config, the run folder, the seeded numpy RNG, sample helpers."""

    name = "?"
    needs: tuple = ()  # networks it loads from RUN/models/, which earlier stages train
    trains: tuple = ()  # networks whose weights it changes (saved to RUN/models/)
    needs_data = True  # whether it trains on the run's faces
    rng_key = 0  # with the seed, keys this stage's numpy RNG (stages 1-3: their number)
    before_final = None  # a callable run on the synced variables before the last checkpoint
    writes = True  # whether this process writes the run folder (False but on process 0)

    @classmethod
    def needs_for(cls, config) -> tuple:
        """The networks this stage needs with ``config`` (default: ``needs``)."""
        return cls.needs

    @classmethod
    def trains_for(cls, config) -> tuple:
        """The networks this stage trains with ``config`` (default: ``trains``)."""
        return cls.trains

    @classmethod
    def check_data(cls, config, dataset) -> None:
        """Refuse ``dataset`` (an AgeCganError naming what makes the missing part) when this
        stage cannot train on it; run for every planned stage before any trains."""

    @classmethod
    def batch_rows(cls, config, dataset) -> int | None:
        """How many faces of ``dataset`` a batch is drawn from (a batch must fit in them), or
        None where ``check_data`` checks it (faces read from elsewhere)."""
        return len(dataset.train())

    def __init__(self, config, run: RunFolder, dataset=None):
        self.config, self.run, self.dataset = config, run, dataset
        self.bins = AgeBins.parse(config.age_bins)
        self.num_ages = self.bins.num_ages
        self.rng = np.random.default_rng([config.seed, self.rng_key])
        self.sampler = self.make_sampler() if self.needs_data else None
        self.models, self.optimizers, self.updates = self.build()
        self.fixed = self.make_fixed()

    @property
    def trained(self) -> tuple:
        return self.trains_for(self.config)

    # --- to be defined by each stage ---
    def build(self):  # -> (models dict, optimizers dict, [Update])
        raise NotImplementedError

    @classmethod
    def sampler_rows(cls, dataset) -> int | None:
        """How many faces the stage's sampler draws from (its checkpoint records it), or None
        where a stage draws otherwise (its own ``make_sampler``)."""
        if not cls.needs_data or cls.make_sampler is not Stage.make_sampler:
            return None
        return len(dataset.train())

    def make_sampler(self):
        train = self.dataset.train()
        return BatchSampler(train.images, train.categories, self.num_ages,
                            self.config.batch_size, seed=self.config.seed)

    def make_fixed(self) -> dict:  # arrays fixed for the whole stage (sample grids)
        return {}

    def next_batch(self) -> dict:
        raise NotImplementedError

    def samples(self) -> dict:  # tag -> uint8 grid, from the Keras variables
        return {}

    def begin(self, resumed: bool) -> None:
        """Called once before the first step (after a restore when ``resumed``)."""

    def finish(self, history: list[dict]) -> dict:
        """The stage's result once its networks are saved: the last logged window's means."""
        return history[-1] if history else {}

    # --- shared ---
    def random_ages(self, n):
        return self.bins.one_hot(self.rng.integers(0, self.num_ages, n))

    def normal(self, n):
        return self.rng.standard_normal((n, self.config.z_dim)).astype(np.float32)

    def get_state(self) -> dict:
        state = {"rng": self.rng.bit_generator.state}
        if self.sampler is not None:
            state["sampler"] = self.sampler.get_state()
        return state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        if self.sampler is not None:
            self.sampler.set_state(state["sampler"])

    def adam(self, lr, beta_1=0.9, name=None):
        return keras.optimizers.Adam(learning_rate=lr, beta_1=beta_1, name=name)

    def load(self, network):
        return self.run.load_model(network)

    def test_faces(self, n):
        """The first n test faces (or training faces when the split is empty), in [-1, 1]."""
        test = self.dataset.test() if self.dataset.is_test.any() else self.dataset
        n = min(n, len(test))
        images = normalize(test.images[:n])
        return images, self.bins.one_hot(test.categories[:n])

    def age_rows(self, z, generator):
        """G(z_i, every age) for each row z_i: (rows * num_ages, H, W, 3) uint8."""
        rows = len(z)
        z = np.repeat(z, self.num_ages, axis=0)
        ages = np.tile(np.eye(self.num_ages, dtype=np.float32), (rows, 1))
        return denormalize(keras.ops.convert_to_numpy(generator([z, ages], training=False)))
