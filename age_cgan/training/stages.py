"""The three Age-cGAN training stages: networks, losses (as backend updates), batches, samples.

Each stage is written once over ``Forward`` (stateless calls), so the same definition runs as a
TensorFlow GradientTape step or a JAX step (see age_cgan/backend). Each declares what it needs
and trains (``training.stage.Stage``); the face recogniser's stage is in face_recognizer.py.

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
from age_cgan.backend import Update
from age_cgan.data import denormalize
from age_cgan.runs import RunFolder, face_recognizer_weights, load_face_recognizer
from age_cgan.training.stage import Stage
from age_cgan.visualize import labelled_grid


class Stage1(Stage):
    """Conditional GAN."""

    name = "1"
    trains = ("generator", "discriminator")
    rng_key = 1

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
    needs = ("generator",)
    trains = ("encoder",)
    needs_data = False
    rng_key = 2

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
    needs = ("encoder", "generator")
    trains = ("encoder",)
    rng_key = 3

    @classmethod
    def needs_for(cls, config):  # D's term keeps a fine-tuned G realistic
        return cls.needs + (("discriminator",) if config.finetune_generator else ())

    @classmethod
    def trains_for(cls, config):
        return cls.trains + (("generator",) if config.finetune_generator else ())

    def build(self):
        c = self.config
        models = {
            "encoder": self.load("encoder"),
            "generator": self.load("generator"),
            "face_recognizer": stage3_face_recognizer(self.run, c),
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


def stage3_face_recognizer(run: RunFolder, config):
    """The run's trained FR (models/face_recognizer.keras) unless ``fr_weights`` says otherwise;
    without one, InceptionResNetV2 with ImageNet weights (the book's choice, a download)."""
    weights = face_recognizer_weights(run, config.fr_weights, default="imagenet")
    return load_face_recognizer(run, weights, config.image_size, config.fr_input_size,
                                config.arch)
