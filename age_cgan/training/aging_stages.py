"""The image-to-image aging stages (beyond the paper): the age estimator, then the aging network.

Stage age: the age estimator A (``networks.build_age_estimator``) on the training split's own
    age labels (never a judge's verdicts), with photo-like augmentation (``data.augment``):
    cross-entropy of the category (label smoothing 0.1) + a Huber loss of the years, in decades.
Stage aging: the aging network T(photo, own, target) -> change (``networks.build_aging_network``)
    against a conditional patch discriminator D_a, with the frozen A. T's loss, on a batch of
    real faces x at their own categories y and a random other target t:

    * adversarial (LSGAN): D_a(x + T(x, y, t), t) -> 1; D_a learns real (x, y) -> 1, the aged
      face -> 0, and a real face with a wrong age -> 0, so T must show the target age. D_a is
      a projection discriminator on the estimator's trunk, started from the trained estimator
      and trained on, so it knows ages from the first step and learns to call fake the
      patterns that fool the frozen estimator;
    * age: A's cross-entropy for t on the aged face, blurred 3x3 (the estimator reads the face,
      not pixel patterns);
    * reconstruction: |T(x, y, y)|, no change asked at the own age (a fifth of each batch has
      t = y);
    * cycle: |x + T(x, y, t) + T(aged, t, y) - x|, back to the own age (the other rows);
    * change: its mean square, total variation (no stripes or grids) and mean colour apart
      from brightness (no tint over the face).

    T's loss is scaled from 0 to 1 over ``aging_warmup_steps`` while D (at twice T's learning
    rate) learns which age each real face shows, so that T's first changes meet a D that can
    call them fake.

    On a greyscale face the change is its brightness alone, in training as at use. Both stages
    leave a seeded validation split of the training faces (``data.validation_rows``) unseen.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from age_cgan import networks
from age_cgan.aging.network import estimate_ages, network_changes
from age_cgan.aging.result import add_change
from age_cgan.backend import Update
from age_cgan.data import BatchSampler, denormalize, is_gray, normalize, validation_rows
from age_cgan.data.augment import augment
from age_cgan.runs import write_json_atomic
from age_cgan.training.stage import Stage
from age_cgan.visualize import labelled_grid

AGE_ESTIMATOR, AGING_NETWORK, AGING_DISCRIMINATOR = ("age_estimator", "aging_network",
                                                     "aging_discriminator")
LABEL_SMOOTHING = 0.1
SAME_AGE_SHARE = 0.2  # rows of an aging batch asked for their own age (the reconstruction)


class _ImageToImageStage(Stage):
    """What both stages share: batches of rows of the training split minus validation."""

    def make_sampler(self):
        rows = np.setdiff1d(np.flatnonzero(~self.dataset.is_test),
                            validation_rows(self.dataset, seed=self.config.seed))
        return BatchSampler(self.dataset.images, self.dataset.categories, self.num_ages,
                            self.config.batch_size, seed=self.config.seed, flip=False,
                            indices=rows)

    def faces_of(self, rows) -> np.ndarray:
        return np.take(self.dataset.images, rows, axis=0)


# =========================================================================== stage age


def category_cross_entropy(probabilities, one_hot, smoothing=0.0):
    """Mean cross-entropy of probabilities (B, A) against one-hot targets, optionally smoothed."""
    count = ops.cast(ops.shape(one_hot)[-1], "float32")
    target = one_hot * (1.0 - smoothing) + smoothing / count
    return ops.mean(-ops.sum(target * ops.log(ops.clip(probabilities, 1e-7, 1.0)), axis=-1))


def make_age_loss(years_weight):
    def age_loss(f, batch):
        probabilities, years = f(AGE_ESTIMATOR, batch["image"], training=True)
        ce = category_cross_entropy(probabilities, batch["age"], LABEL_SMOOTHING)
        error = (years[:, 0] - batch["years"]) / 10.0  # decades
        huber = ops.mean(ops.where(ops.abs(error) < 1.0, 0.5 * ops.square(error),
                                   ops.abs(error) - 0.5))
        right = ops.cast(ops.argmax(probabilities, -1) == ops.argmax(batch["age"], -1), "float32")
        metrics = {"age/loss/category": ce, "age/loss/years": huber,
                   "age/train_accuracy": ops.mean(right),
                   "age/train_mae_years": ops.mean(ops.abs(error)) * 10.0}
        return ce + years_weight * huber, metrics

    return age_loss


def age_report(model, faces, categories, ages) -> dict:
    """Accuracy of the category guess (argmax), within one category, and the years' MAE."""
    probabilities, years = estimate_ages(model, faces)
    guess = probabilities.argmax(1)
    num = probabilities.shape[1]
    confusion = np.zeros((num, num), np.int64)
    np.add.at(confusion, (np.asarray(categories), guess), 1)
    return {"faces": int(len(faces)), "accuracy": float(np.mean(guess == categories)),
            "within_one": float(np.mean(np.abs(guess - categories) <= 1)),
            "mae_years": float(np.mean(np.abs(years - ages))),
            "confusion": confusion.tolist()}


def confusion_image(confusion, side: int = 32) -> np.ndarray:
    """A row-normalised confusion matrix (true rows, guessed columns) as a grey uint8 image."""
    confusion = np.asarray(confusion, np.float64)
    shares = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    cells = np.kron(np.rint(shares * 255).astype(np.uint8), np.ones((side, side), np.uint8))
    return np.repeat(cells[..., None], 3, axis=-1)


class AgeEstimatorStage(_ImageToImageStage):
    """Stage age: the age estimator on the training split's labels, with augmentation."""

    name = "age"
    trains = (AGE_ESTIMATOR,)
    rng_key = 4

    def build(self):
        c = self.config
        model = networks.build_age_estimator(c.image_size, self.num_ages, c.arch)
        steps = c.total_steps(self.name, int(np.sum(~self.dataset.is_test)))
        # cosine decay to 5%: a short CPU run ends at a low rate instead of a noisy one
        rate = keras.optimizers.schedules.CosineDecay(c.lr_age, steps, alpha=0.05)
        optimizer = self.adam(rate, name="adam_age_estimator")
        return ({AGE_ESTIMATOR: model}, {AGE_ESTIMATOR: optimizer},
                [Update(AGE_ESTIMATOR, make_age_loss(c.age_years_weight))])

    def next_batch(self):
        rows = self.sampler.next_rows()
        return {"image": normalize(augment(self.faces_of(rows), self.rng)),
                "age": self.bins.one_hot(self.dataset.categories[rows]),
                "years": self.dataset.ages[rows].astype(np.float32)}

    def _report(self, rows, limit=None):
        rows = rows[:limit]
        d = self.dataset
        return age_report(self.models[AGE_ESTIMATOR], d.images[rows], d.categories[rows],
                          d.ages[rows])

    def samples(self):
        report = self._report(np.flatnonzero(self.dataset.is_test), 1000)
        return {"stage_age/confusion_test_rows_true": confusion_image(report["confusion"])}

    def finish(self, history):
        """The estimator on the validation and test splits -> ``stageage/summary.json``."""
        summary = {"validation": self._report(validation_rows(self.dataset, seed=self.config.seed)),
                   "test": self._report(np.flatnonzero(self.dataset.is_test)),
                   "labels": list(self.bins.labels), "final_losses": history[-1] if history else None}
        if self.writes:
            write_json_atomic(self.run.stage_dir(self.name) / "summary.json", summary)
        if self.config.progress:
            test = summary["test"]
            print(f"stage age: on {test['faces']} test faces, {test['accuracy']:.1%} in the right "
                  f"category, {test['within_one']:.1%} within one, MAE {test['mae_years']:.1f} "
                  "years")
        return summary


# =========================================================================== stage aging


def luminance_only(change, gray):
    """The change (B, S, S, 3) with its colour removed where ``gray`` (B,) is 1."""
    gray = ops.reshape(ops.cast(gray, change.dtype), (-1, 1, 1, 1))
    return change * (1.0 - gray) + ops.mean(change, axis=-1, keepdims=True) * gray


def apply_change(photo, change):
    return ops.clip(photo + change, -1.0, 1.0)


def blur3(images):
    """3x3 box blur, stride 1 (what the age estimator reads of an aged face in training)."""
    return ops.average_pool(images, 3, strides=1, padding="same")


def total_variation(change):
    return (ops.mean(ops.abs(change[:, 1:] - change[:, :-1]))
            + ops.mean(ops.abs(change[:, :, 1:] - change[:, :, :-1])))


def tint(change):
    """Mean over faces of the |spatial mean| of the change's colour apart from its brightness."""
    colour = change - ops.mean(change, axis=-1, keepdims=True)
    return ops.mean(ops.abs(ops.mean(colour, axis=(1, 2))))


def _aged(f, batch, training):
    change = f(AGING_NETWORK, [batch["image"], batch["age"], batch["target"]], training=training)
    change = luminance_only(change, batch["gray"])
    return change, apply_change(batch["image"], change)


def aging_d_step(f, batch):
    _, aged = _aged(f, batch, training=False)
    real = f(AGING_DISCRIMINATOR, [batch["image"], batch["age"]], training=True)
    fake = f(AGING_DISCRIMINATOR, [aged, batch["target"]], training=True)
    wrong = f(AGING_DISCRIMINATOR, [batch["image"], batch["age_wrong"]], training=True)
    other = 1.0 - batch["same"]  # an aged face asked for its own age is the photo: not a fake
    per_face = ops.mean(ops.square(fake), axis=(1, 2, 3))
    fake_loss = ops.sum(per_face * other) / ops.maximum(ops.sum(other), 1.0)
    loss = (ops.mean(ops.square(real - 1.0)) + 0.5 * fake_loss
            + 0.5 * ops.mean(ops.square(wrong)))
    return loss, {"aging/loss/d": loss, "aging/d/real": ops.mean(real),
                  "aging/d/aged": ops.mean(fake), "aging/d/wrong_age": ops.mean(wrong)}


def make_aging_t_step(weights: dict):
    """T's loss with the weights of TrainConfig's ``aging_*_weight`` fields (by term). Rows
    whose target is their own age (``batch["same"]`` = 1) carry the reconstruction term; the
    cycle's second pass runs only with a cycle weight."""
    def aging_t_step(f, batch):
        change, aged = _aged(f, batch, training=True)
        same = batch["same"]
        other = 1.0 - same
        terms = {}
        terms["adversarial"] = ops.mean(ops.square(
            f(AGING_DISCRIMINATOR, [aged, batch["target"]], training=False) - 1.0))
        probabilities, _ = f(AGE_ESTIMATOR, blur3(aged), training=False)
        terms["age"] = category_cross_entropy(probabilities, batch["target"])
        size = ops.mean(ops.abs(change), axis=(1, 2, 3))  # (B,)
        terms["reconstruction"] = ops.sum(size * same) / ops.maximum(ops.sum(same), 1.0)
        if weights["cycle"]:
            back = f(AGING_NETWORK, [aged, batch["target"], batch["age"]], training=True)
            cycled = apply_change(aged, luminance_only(back, batch["gray"]))
            error = ops.mean(ops.abs(cycled - batch["image"]), axis=(1, 2, 3))
            terms["cycle"] = ops.sum(error * other) / ops.maximum(ops.sum(other), 1.0)
        squared = ops.mean(ops.square(change), axis=(1, 2, 3))  # no dead zone, unlike L1
        terms["change"] = ops.sum(squared * other) / ops.maximum(ops.sum(other), 1.0)
        terms["smoothness"] = total_variation(change)
        terms["tint"] = tint(change)
        # T's loss grows from 0 over the warm-up, while D learns which age each face shows
        loss = batch["ramp"] * sum(weights[name] * value for name, value in terms.items())
        right = ops.cast(ops.argmax(probabilities, -1) == ops.argmax(batch["target"], -1),
                         "float32")
        return loss, {"aging/loss/t": loss, **{f"aging/loss/{k}": v for k, v in terms.items()},
                      "aging/estimator_in_target": ops.mean(right)}

    return aging_t_step


def start_from_estimator(discriminator, estimator) -> int:
    """Copy the trained estimator's trunk (layers of the same name) into the discriminator, so
    that it knows which age a face shows before its first step; returns the layers copied (a
    resumed stage then restores its own weights over them)."""
    trunk = {layer.name: layer for layer in estimator.layers if layer.name.startswith("age")}
    copied = 0
    for layer in discriminator.layers:
        if layer.name in trunk and layer.get_weights():
            layer.set_weights(trunk[layer.name].get_weights())
            copied += 1
    return copied


class AgingStage(_ImageToImageStage):
    """Stage aging: T against a conditional patch discriminator, with the frozen estimator."""

    name = "aging"
    needs = (AGE_ESTIMATOR,)
    trains = (AGING_NETWORK, AGING_DISCRIMINATOR)
    rng_key = 5

    def build(self):
        c = self.config
        models = {
            AGING_NETWORK: networks.build_aging_network(c.image_size, self.num_ages, c.arch),
            AGING_DISCRIMINATOR: networks.build_aging_discriminator(c.image_size, self.num_ages,
                                                                    c.arch),
            AGE_ESTIMATOR: self.load(AGE_ESTIMATOR),
        }
        start_from_estimator(models[AGING_DISCRIMINATOR], models[AGE_ESTIMATOR])
        # D learns at twice T's rate (the two time-scale rule, Heusel et al. 2017), so that it
        # calls patterns no face has fake before T can lean on the age estimator with them
        optimizers = {AGING_NETWORK: self.adam(c.lr_aging, 0.5, name=f"adam_{AGING_NETWORK}"),
                      AGING_DISCRIMINATOR: self.adam(2 * c.lr_aging, 0.5,
                                                     name=f"adam_{AGING_DISCRIMINATOR}")}
        weights = {name: float(getattr(c, f"aging_{name}_weight")) for name in
                   ("adversarial", "age", "reconstruction", "cycle", "change", "smoothness",
                    "tint")}
        return models, optimizers, [Update(AGING_DISCRIMINATOR, aging_d_step),
                                    Update(AGING_NETWORK, make_aging_t_step(weights))]

    def make_fixed(self):
        self.drawn = 0  # batches drawn: the warm-up's clock (checkpointed with the stage)
        images, ages = self.test_faces(self.config.grid_rows)
        return {"faces": images, "face_ages": ages}

    def next_batch(self):
        rows = self.sampler.next_rows()
        faces = self.faces_of(rows)
        mirrored = self.rng.random(len(faces)) < 0.5
        faces[mirrored] = faces[mirrored, :, ::-1]
        own = self.dataset.categories[rows]
        n = len(rows)
        same = self.rng.random(n) < SAME_AGE_SHARE
        target = np.where(same, own, self._other(own))
        self.drawn += 1
        warmup = self.config.aging_warmup_steps
        return {"image": normalize(faces), "age": self.bins.one_hot(own),
                "target": self.bins.one_hot(target), "same": same.astype(np.float32),
                "age_wrong": self.bins.one_hot(self._other(own)),
                "gray": is_gray(faces).astype(np.float32),
                "ramp": np.float32(min(1.0, self.drawn / warmup) if warmup else 1.0)}

    def get_state(self) -> dict:
        return {**super().get_state(), "drawn": self.drawn}

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self.drawn = int(state.get("drawn", 0))

    def _other(self, own):
        """A uniformly random category other than each of ``own``."""
        return (own + self.rng.integers(1, self.num_ages, len(own))) % self.num_ages

    def samples(self):
        return {"stage_aging/test_faces_by_age": aging_grid(
            self.models[AGING_NETWORK], self.fixed["faces"], self.fixed["face_ages"],
            self.bins.labels)}

    def finish(self, history):
        summary = {"final_losses": history[-1] if history else None,
                   "settings": {k: v for k, v in self.config.to_dict().items()
                                if k.startswith(("aging_", "lr_aging"))}}
        if self.writes:
            write_json_atomic(self.run.stage_dir(self.name) / "summary.json", summary)
        return summary


def aging_grid(network, faces, own, labels) -> np.ndarray:
    """Rows of: input face | the face aged by ``network`` to each category (the own age is the
    reconstruction), for faces (B, S, S, 3) in [-1, 1] at own one-hot ages (B, A)."""
    faces = denormalize(faces)
    change = network_changes(network, faces, own.argmax(1), range(len(labels)), 1.0)
    aged = np.stack([add_change(face, c) for face, c in zip(faces, change)])
    rows = np.concatenate([faces[:, None], aged], axis=1)
    names = ["input", *labels]
    return labelled_grid(rows.reshape(-1, *faces.shape[1:]), len(faces), len(names), names)
