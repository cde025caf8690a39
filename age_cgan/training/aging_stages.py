"""The image-to-image aging stages (beyond the paper): the age estimator, then the aging network.

Stage age: the age estimator A (``networks.build_age_estimator``) on the training split's own
    age labels (never a judge's verdicts), with photo-like augmentation (``data.augment``):
    cross-entropy of the category (label smoothing 0.1) + a Huber loss of the years, in decades.
Stage aging: the aging network T(photo, own, target) -> change (``networks.build_aging_network``)
    at ``aging_size`` (default: the run's faces; the lite recipe's: 128 px from
    ``prototype_data``), taught by the age prototypes, against a conditional patch
    discriminator D_a, with the frozen A. T's loss, on a batch of real faces x at their own
    categories y and a target t (a fifth of each batch: t = y):

    * pseudo-pair: the distance to the same face aged by the prototypes to t (``pair_bands``:
      a Laplacian pyramid, after an ``aging_pair_pool`` x blur-pool, each band scaled by its
      size in the prototypes' changes, so folds count as much as light and colour; at t = y
      the target is the photo). The pairs are made once for ``aging_pair_faces`` training
      faces, on their own landmarks, and kept in RUN/stageaging/pairs.npz; RUN/prototypes.npz
      is built first when missing;
    * adversarial (LSGAN): D_a(x + T(x, y, t), t) -> 1; D_a (``SpectralConv2D`` layers, at twice
      T's learning rate) learns real (x, y) -> 1, the aged face -> 0, and a real face with a
      wrong age -> 0;
    * age: A's cross-entropy for t on the aged face, averaged down to A's side and blurred 3x3;
    * reconstruction: |T(x, y, y)|; cycle: |x + T(x, y, t) + T(aged, t, y) - x|;
    * change: its mean square, total variation (no stripes or grids) and mean colour apart
      from brightness (no tint over the face).

    T's loss is scaled from 0 to 1 over ``aging_warmup_steps``. Samples show fixed test faces
    aged by the prototypes and by T, and at each sample step the three figures of evaluate.py
    on ``aging_figure_faces`` validation faces.

    On a greyscale face the change is its brightness alone, in training as at use. Both stages
    leave a seeded validation split of the training faces (``data.validation_rows``) unseen.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from age_cgan import networks
from age_cgan.aging.loading import PROTOTYPES_FILE
from age_cgan.aging.network import estimate_ages, network_changes
from age_cgan.aging.result import add_change
from age_cgan.backend import Update
from age_cgan.data import BatchSampler, denormalize, is_gray, normalize, validation_rows
from age_cgan.data.augment import augment
from age_cgan.runs import write_json_atomic
from age_cgan.training.teacher import (aged_by_prototypes, aged_figures, aging_faces, aging_grid,
                                       check_aging_faces, pair_distance, pair_scales,
                                       prototype_aged, run_prototypes, validation_judges)
from age_cgan.training.stage import Stage

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

    @classmethod
    def batch_rows(cls, config, dataset) -> int | None:
        """The training faces less the validation faces (``make_sampler``'s rows)."""
        return len(np.setdiff1d(np.flatnonzero(~dataset.is_test),
                                validation_rows(dataset, seed=config.seed)))

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


def to_side(images, side: int):
    """Images (B, S, S, C) averaged down to ``side`` (S a multiple of it; the same images when
    S is ``side``): the aged 128 px face as the 64 px age estimator reads it."""
    factor = images.shape[1] // side
    return images if factor <= 1 else ops.average_pool(images, factor, strides=factor)


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


def make_aging_t_step(weights: dict, pair_scales=None, pair_pool: int = 1):
    """T's loss with the weights of TrainConfig's ``aging_*_weight`` fields (by term). Rows
    whose target is their own age (``batch["same"]`` = 1) carry the reconstruction term; the
    cycle's second pass runs only with a cycle weight; the pseudo-pair term (``batch["pair"]``,
    the face aged by the prototypes) only with ``pair_scales`` (its bands' sizes)."""
    def aging_t_step(f, batch):
        change, aged = _aged(f, batch, training=True)
        same = batch["same"]
        other = 1.0 - same
        terms = {}
        terms["adversarial"] = ops.mean(ops.square(
            f(AGING_DISCRIMINATOR, [aged, batch["target"]], training=False) - 1.0))
        estimator_side = int(f.models[AGE_ESTIMATOR].input_shape[1])
        probabilities, _ = f(AGE_ESTIMATOR, blur3(to_side(aged, estimator_side)),
                             training=False)
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
        if pair_scales is not None:
            terms["pair"] = ops.mean(pair_distance(aged, batch["pair"], pair_scales, pair_pool))
        # T's loss grows from 0 over the warm-up, while D learns which age each face shows
        loss = batch["ramp"] * sum(weights[name] * value for name, value in terms.items())
        right = ops.cast(ops.argmax(probabilities, -1) == ops.argmax(batch["target"], -1),
                         "float32")
        return loss, {"aging/loss/t": loss, **{f"aging/loss/{k}": v for k, v in terms.items()},
                      "aging/estimator_in_target": ops.mean(right)}

    return aging_t_step


# --------------------------------------------------------------------------- the stage


class AgingStage(_ImageToImageStage):
    """Stage aging: T against a conditional patch discriminator, with the frozen estimator and
    the age prototypes as its teacher, at ``aging_size``."""

    name = "aging"
    needs = (AGE_ESTIMATOR,)
    trains = (AGING_NETWORK, AGING_DISCRIMINATOR)
    rng_key = 5

    def __init__(self, config, run, dataset=None):
        super().__init__(config, run, aging_faces(config, dataset))

    @classmethod
    def check_data(cls, config, dataset) -> None:
        """Its faces at ``aging_size`` (their side, a batch of them), and the prototypes or
        what builds them (``teacher.check_aging_faces``)."""
        check_aging_faces(config)

    @classmethod
    def batch_rows(cls, config, dataset) -> int | None:
        """The pool's faces (those that have pairs); None at another side (checked from the
        faces of that side by ``check_data``)."""
        if config.aging_size not in (None, config.image_size):
            return None
        rows = super().batch_rows(config, dataset)
        return min(rows, config.aging_pair_faces) if config.aging_pair_weight else rows

    def make_sampler(self):
        rows = np.setdiff1d(np.flatnonzero(~self.dataset.is_test),
                            validation_rows(self.dataset, seed=self.config.seed))
        if self.config.aging_pair_weight:  # the faces that have pairs
            count = min(self.config.aging_pair_faces, len(rows))
            rows = np.sort(np.random.default_rng([self.config.seed, 6]).permutation(rows)[:count])
        self.pool = rows
        return BatchSampler(self.dataset.images, self.dataset.categories, self.num_ages,
                            self.config.batch_size, seed=self.config.seed, flip=False,
                            indices=rows)

    def build(self):
        c = self.config
        side = self.dataset.image_size
        models = {
            AGING_NETWORK: networks.build_aging_network(side, self.num_ages, c.arch),
            AGING_DISCRIMINATOR: networks.build_aging_discriminator(side, self.num_ages, c.arch),
            AGE_ESTIMATOR: self.load(AGE_ESTIMATOR),
        }
        optimizers = {AGING_NETWORK: self.adam(c.lr_aging, 0.5, name=f"adam_{AGING_NETWORK}"),
                      AGING_DISCRIMINATOR: self.adam(2 * c.lr_aging, 0.5,
                                                     name=f"adam_{AGING_DISCRIMINATOR}")}
        weights = {name: float(getattr(c, f"aging_{name}_weight")) for name in
                   ("adversarial", "age", "reconstruction", "cycle", "change", "smoothness",
                    "tint", "pair")}
        self.pairs, scales = None, None
        if weights["pair"]:
            self.pairs, scales = self._pairs()
        return models, optimizers, [Update(AGING_DISCRIMINATOR, aging_d_step),
                                    Update(AGING_NETWORK, make_aging_t_step(weights, scales,
                                                                      c.aging_pair_pool))]

    def _pairs(self):
        """Each pool face aged by the prototypes to every category (uint8 (N, A, S, S, 3)),
        from RUN/stageaging/pairs.npz when it holds these faces at this shape strength, else
        made (and kept there for a resumed stage), and the pair term's band scales."""
        path = self.run.stage_dir(self.name) / "pairs.npz"
        faces = self.faces_of(self.pool)
        shape = float(self.config.aging_pair_shape)
        aged = None
        if path.is_file():
            with np.load(path) as kept:
                if np.array_equal(kept["rows"], self.pool) and "shape" in kept and \
                        float(kept["shape"]) == shape and \
                        kept["aged"].shape[2] == self.dataset.image_size:
                    aged = kept["aged"]
        if aged is None:
            prototypes = run_prototypes(self.config, self.run, self.config.progress)
            aged = prototype_aged(prototypes, faces, self.dataset.categories[self.pool],
                                  self.num_ages, shape, self.config.progress)
            if self.writes:
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez(path, rows=self.pool, aged=aged, shape=shape)
        return aged, pair_scales(faces, aged, pool=self.config.aging_pair_pool)

    def make_fixed(self):
        self.drawn = 0  # batches drawn: the warm-up's clock (checkpointed with the stage)
        images, ages = self.test_faces(self.config.grid_rows)
        return {"faces": images, "face_ages": ages}

    def next_batch(self):
        rows = self.sampler.next_rows()
        faces = self.faces_of(rows)
        n = len(rows)
        mirrored = self.rng.random(n) < 0.5
        faces[mirrored] = faces[mirrored, :, ::-1]
        own = self.dataset.categories[rows]
        same = self.rng.random(n) < SAME_AGE_SHARE
        target = np.where(same, own, self._other(own))
        self.drawn += 1
        warmup = self.config.aging_warmup_steps
        batch = {"image": normalize(faces), "age": self.bins.one_hot(own),
                 "target": self.bins.one_hot(target), "same": same.astype(np.float32),
                 "age_wrong": self.bins.one_hot(self._other(own)),
                 "gray": is_gray(faces).astype(np.float32),
                 "ramp": np.float32(min(1.0, self.drawn / warmup) if warmup else 1.0)}
        if self.pairs is not None:
            aged = self.pairs[np.searchsorted(self.pool, rows), target]
            aged[mirrored] = aged[mirrored, :, ::-1]
            batch["pair"] = normalize(aged)
        return batch

    def get_state(self) -> dict:
        return {**super().get_state(), "drawn": self.drawn}

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self.drawn = int(state.get("drawn", 0))

    def _other(self, own):
        """A uniformly random category other than each of ``own``."""
        return (own + self.rng.integers(1, self.num_ages, len(own))) % self.num_ages

    def samples(self):
        faces, own = self.fixed["faces"], self.fixed["face_ages"]
        if not hasattr(self, "_grid_teacher"):  # the same fixed faces at every sample step
            self._grid_teacher = self._teacher(denormalize(faces), own.argmax(1))
        out = {"stage_aging/test_faces_by_age": aging_grid(
            self.models[AGING_NETWORK], faces, own, self.bins.labels, self._grid_teacher)}
        out.update(self._figures())
        return out

    def _teacher(self, faces, sources):
        """The faces aged by the prototype method (warp included) to every category, or None."""
        path = self.run.path / PROTOTYPES_FILE
        if not path.is_file():
            return None
        return aged_by_prototypes((str(path), faces, sources, list(range(self.num_ages)), 1.0))

    def _figures(self) -> dict:
        """The three figures of ``evaluate.py`` on ``aging_figure_faces`` validation faces
        aged by the network (and, once, by the prototypes): same person (dlib), in the target
        category (the age judge) and the two-sample test (one seed) against the other
        validation faces; a judge that is not installed is left out."""
        count = self.config.aging_figure_faces
        if not count:
            return {}
        if not hasattr(self, "_validation"):
            rows = validation_rows(self.dataset, seed=self.config.seed)
            picked = np.random.default_rng([self.config.seed, 8]).permutation(rows)
            self._validation = (picked[:count], picked[count:])
            self._judges = validation_judges()
            self._teacher_figures = None
        aged_rows, real_rows = self._validation
        d = self.dataset
        faces, sources = d.images[aged_rows], d.categories[aged_rows]
        change = network_changes(self.models[AGING_NETWORK], faces, sources,
                                 range(self.num_ages), 1.0)
        aged = np.stack([add_change(face, c) for face, c in zip(faces, change)])
        figures = {f"aging/validation/{k}": v for k, v in aged_figures(
            faces, sources, aged, d.images[real_rows], d.categories[real_rows], self.bins,
            *self._judges).items()}
        if self._teacher_figures is None and (self.run.path / PROTOTYPES_FILE).is_file():
            teacher = self._teacher(faces, sources)
            self._teacher_figures = {f"aging/validation_prototypes/{k}": v for k, v in
                                     aged_figures(faces, sources, teacher, d.images[real_rows],
                                                  d.categories[real_rows], self.bins,
                                                  *self._judges).items()}
        return {**figures, **(self._teacher_figures or {})}

    def finish(self, history):
        summary = {"final_losses": history[-1] if history else None,
                   "image_size": int(self.dataset.image_size),
                   "settings": {k: v for k, v in self.config.to_dict().items()
                                if k.startswith(("aging_", "lr_aging"))}}
        if self.writes:
            write_json_atomic(self.run.stage_dir(self.name) / "summary.json", summary)
        return summary
