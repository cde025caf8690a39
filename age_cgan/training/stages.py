"""The three Age-cGAN training stages: networks, losses (as bridge updates), batches, samples.

Each stage is written once over ``Forward`` (stateless calls), so the same definition runs as a
TensorFlow GradientTape step or a JAX step (see bridge.py). Batches are numpy: the stage owns a
seeded numpy Generator (latents, random ages) and a data sampler, both saved in checkpoints.

Stage 1: conditional GAN (D on real/fake pairs with one-sided smoothing; G non-saturating on
         uniformly random ages, as the book does).
Stage 2: encoder on fresh synthetic pairs: E(G(z, y)) -> z, G frozen (paper: 100k pairs).
Stage 3: identity: E fine-tuned so that FR(G(E(x), y_x)) matches FR(x) on real faces, G and FR
         frozen; with ``finetune_generator`` G is trained too, keeping D's adversarial term.
"""

from __future__ import annotations

import keras
import numpy as np

from age_cgan import losses, networks
from age_cgan.ages import AgeBins
from age_cgan.data import BatchSampler, denormalize, normalize
from age_cgan.runs import RunFolder
from age_cgan.training.bridge import Update
from age_cgan.visualize import labelled_grid


class Stage:
    """Common parts: the config, the run folder, the seeded numpy RNG, sample helpers."""

    name = "?"
    trained: tuple = ()  # networks whose weights this stage changes (saved to models/)
    needs_data = True

    def __init__(self, config, run: RunFolder, dataset=None):
        self.config, self.run, self.dataset = config, run, dataset
        self.bins = AgeBins.parse(config.age_bins)
        self.num_ages = self.bins.num_ages
        self.rng = np.random.default_rng([config.seed, int(self.name)])
        self.sampler = None
        if self.needs_data:
            train = dataset.train()
            self.sampler = BatchSampler(
                train.images, train.categories, self.num_ages, config.batch_size, seed=config.seed
            )
        self.models, self.optimizers, self.updates = self.build()
        self.fixed = self.make_fixed()

    # --- to be defined by each stage ---
    def build(self):  # -> (models dict, optimizers dict, [Update])
        raise NotImplementedError

    def make_fixed(self) -> dict:  # arrays fixed for the whole stage (sample grids)
        return {}

    def next_batch(self) -> dict:
        raise NotImplementedError

    def samples(self) -> dict:  # tag -> uint8 grid, from the Keras variables
        return {}

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


class Stage1(Stage):
    """Conditional GAN."""

    name = "1"
    trained = ("generator", "discriminator")

    def build(self):
        c = self.config
        models = {
            "generator": networks.build_generator(c.z_dim, self.num_ages, c.image_size,
                                                  arch=c.arch),
            "discriminator": networks.build_discriminator(c.image_size, self.num_ages, c.arch),
        }
        optimizers = {
            name: self.adam(c.lr_gan, c.beta1_gan, name=f"adam_{name}") for name in models
        }
        mismatch = float(c.mismatch_weight)
        d_update = (lambda f, b: d_step(f, b, mismatch)) if mismatch else d_step
        return models, optimizers, [Update("discriminator", d_update), Update("generator", g_step)]

    def make_fixed(self):
        return {"grid_z": self.normal(self.config.grid_rows)}

    def next_batch(self):
        batch = self.sampler.next()
        n = self.config.batch_size
        # D's fakes carry the real batch's ages; G trains on uniformly random ages (book).
        batch.update(z_d=self.normal(n), z_g=self.normal(n), age_g=self.random_ages(n))
        if self.config.mismatch_weight:  # every real face with another age than its own
            own = np.argmax(batch["age"], axis=1)
            batch["age_wrong"] = self.bins.one_hot(
                (own + self.rng.integers(1, self.num_ages, n)) % self.num_ages)
        return batch

    def samples(self):
        faces = self.age_rows(self.fixed["grid_z"], self.models["generator"])
        grid = labelled_grid(faces, self.config.grid_rows, self.num_ages, self.bins.labels)
        return {"stage1/samples_by_age": grid}


def d_step(f, batch, mismatch_weight=0.0):
    fake = f("generator", [batch["z_d"], batch["age"]], training=True)
    p_real = f("discriminator", [batch["image"], batch["age"]], training=True)
    p_fake = f("discriminator", [fake, batch["age"]], training=True)
    loss = losses.discriminator_loss(p_real, p_fake)
    scalars = {
        "stage1/d/p_real": keras.ops.mean(p_real),
        "stage1/d/p_fake": keras.ops.mean(p_fake),
    }
    if mismatch_weight:  # a real face paired with a wrong age is not a real pair
        p_wrong = f("discriminator", [batch["image"], batch["age_wrong"]], training=True)
        loss = loss + mismatch_weight * losses.bce(p_wrong, losses.FAKE_LABEL)
        scalars["stage1/d/p_wrong_age"] = keras.ops.mean(p_wrong)
    return loss, {"stage1/loss/d": loss, **scalars}


def g_step(f, batch):
    fake = f("generator", [batch["z_g"], batch["age_g"]], training=True)
    loss = losses.generator_loss(f("discriminator", [fake, batch["age_g"]], training=True))
    return loss, {"stage1/loss/g": loss}


class Stage2(Stage):
    """Encoder: initial latent approximation on fresh synthetic pairs."""

    name = "2"
    trained = ("encoder",)
    needs_data = False

    def build(self):
        c = self.config
        models = {
            "generator": self.load("generator"),
            "encoder": networks.build_encoder(c.image_size, c.z_dim, c.arch),
        }
        optimizers = {"encoder": self.adam(c.lr_encoder, name="adam_encoder")}
        return models, optimizers, [Update("encoder", encoder_step)]

    def make_fixed(self):
        n = self.config.grid_rows
        return {"grid_z": self.normal(n), "grid_age": self.random_ages(n)}

    def next_batch(self):
        n = self.config.batch_size
        return {"z": self.normal(n), "age": self.random_ages(n)}

    def samples(self):
        g, e = self.models["generator"], self.models["encoder"]
        numpy = keras.ops.convert_to_numpy
        x = numpy(g([self.fixed["grid_z"], self.fixed["grid_age"]], training=False))
        x_rec = numpy(g([numpy(e(x, training=False)), self.fixed["grid_age"]], training=False))
        pairs = np.stack([denormalize(x), denormalize(x_rec)], 1)
        grid = labelled_grid(pairs.reshape(-1, *pairs.shape[2:]), len(x), 2, ["G(z,y)", "G(E(.),y)"])
        return {"stage2/reconstructions": grid}


def encoder_step(f, batch):
    x = f("generator", [batch["z"], batch["age"]], training=False)
    z = f("encoder", x, training=True)
    loss = losses.latent_loss(z, batch["z"])
    # An encoder that outputs zeros scores E||z|| (~9.97 for z of 100): the baseline to beat.
    zeros = losses.latent_loss(keras.ops.zeros_like(batch["z"]), batch["z"])
    return loss, {"stage2/loss/latent": loss, "stage2/loss/zeros_baseline": zeros}


class Stage3(Stage):
    """Identity-preserving fine-tuning of the encoder (and optionally the generator)."""

    name = "3"

    @property
    def trained(self):
        return ("encoder", "generator") if self.config.finetune_generator else ("encoder",)

    def build(self):
        c = self.config
        models = {
            "encoder": self.load("encoder"),
            "generator": self.load("generator"),
            "face_recognizer": load_face_recognizer(self.run, c),
        }
        updates = [Update("encoder", identity_step)]
        if c.finetune_generator:
            models["discriminator"] = self.load("discriminator")
            weight = float(c.adversarial_weight)
            updates.append(Update("generator", lambda f, b: identity_adversarial_step(f, b, weight)))
        optimizers = {
            name: self.adam(c.lr_identity, c.beta1_identity, name=f"adam_{name}")
            for name in self.trained
        }
        return models, optimizers, updates

    def make_fixed(self):
        images, ages = self.test_faces(self.config.grid_rows)
        return {"faces": images, "face_ages": ages}

    def next_batch(self):
        return self.sampler.next()

    def samples(self):
        return {"stage3/reconstructions": reconstruction_grid(self, self.fixed["faces"])}


def identity_step(f, batch):
    z = f("encoder", batch["image"], training=True)
    x_rec = f("generator", [z, batch["age"]], training=False)
    loss = losses.identity_loss(
        f("face_recognizer", batch["image"], training=False),
        f("face_recognizer", x_rec, training=False),
    )
    return loss, {
        "stage3/loss/identity": loss,
        "stage3/pixel_mse": losses.pixel_loss(x_rec, batch["image"]),
    }


def identity_adversarial_step(f, batch, weight):
    z = f("encoder", batch["image"], training=False)
    x_rec = f("generator", [z, batch["age"]], training=True)
    identity = losses.identity_loss(
        f("face_recognizer", batch["image"], training=False),
        f("face_recognizer", x_rec, training=False),
    )
    adversarial = losses.generator_loss(f("discriminator", [x_rec, batch["age"]], training=False))
    loss = identity + weight * adversarial
    return loss, {"stage3/loss/g_identity": identity, "stage3/loss/g_adversarial": adversarial}


def reconstruction_grid(stage, faces):
    """Rows of: input face | G(E(x), each age)."""
    e, g = stage.models["encoder"], stage.models["generator"]
    z = keras.ops.convert_to_numpy(e(faces, training=False))
    aged = stage.age_rows(z, g).reshape(len(faces), stage.num_ages, *faces.shape[1:])
    rows = np.concatenate([denormalize(faces)[:, None], aged], axis=1)
    labels = ["input", *stage.bins.labels]
    return labelled_grid(rows.reshape(-1, *faces.shape[1:]), len(faces), len(labels), labels)


#: ``face_recognizer_weights``' answer for the run's own trained FR (not a possible file name).
RUN_FR = "<the run's models/face_recognizer.keras>"


def face_recognizer_weights(run: RunFolder, config) -> str:
    """Which FR stage 3 uses: ``RUN_FR`` (the run's trained one), "imagenet", "none" or a
    weights file's path."""
    if config.fr_weights is None and run.has_model("face_recognizer"):
        return RUN_FR
    return "imagenet" if config.fr_weights is None else config.fr_weights


def load_face_recognizer(run: RunFolder, config):
    """The run's trained FR (models/face_recognizer.keras) unless --fr-weights says otherwise.

    ``fr_weights`` None picks the run's trained FR when present, else "imagenet" (the book's
    choice, which needs a download); "none" is a random backbone (only for smoke tests).
    """
    weights = face_recognizer_weights(run, config)
    if weights == RUN_FR:
        return run.load_model("face_recognizer")
    return networks.build_face_recognizer(
        config.image_size,
        weights=None if weights == "none" else weights,
        input_size=config.fr_input_size,
        arch=config.arch,
    )


STAGE_CLASSES = {"1": Stage1, "2": Stage2, "3": Stage3}


def missing_models(run: RunFolder, stage: str, config) -> list[str]:
    """What a stage needs from earlier stages and the run folder lacks."""
    need = {"1": [], "2": ["generator"], "3": ["encoder", "generator"], "fr": []}[stage]
    if stage == "3" and config.finetune_generator:
        need.append("discriminator")
    return [name for name in need if not run.has_model(name)]

