"""Per-image latent optimisation (the paper's section 3.2, design decision 6), from z0, G frozen.

* ``pixel``: z*_pixel = argmin_z mean((x - G(z, y_src))^2)
* ``identity``: z*_IP = argmin_z ||FR(x) - FR(G(z, y_src))||, the identity-preserving one

where y_src is the category of the person's age in the photo. All calls are in inference mode
and change no weight: the optimisation differentiates only with respect to z, through
``Model.stateless_call`` on the frozen values, compiled by ``backend.value_and_grad``. Adam on
z (numpy, a few lines) takes ``steps`` updates; the z with the lowest loss is kept.

A batch of faces is optimised at once: each face's loss depends on its own z only (BatchNorm
uses its stored statistics in inference mode), so the gradient of the sum of the per-face
losses with respect to z_i is face i's own gradient, and Adam acts per coordinate: the result
for each face is that of optimising it alone. The per-face losses come out of the same compiled
call as the gradient: the objective is sum_i w_i * loss_i(z_i) with unit weights w appended to
z as one more column, and its derivative in w_i is loss_i.
"""

from __future__ import annotations

import keras
import numpy as np

from age_cgan import losses
from age_cgan.aging.methods import DEFAULT_STEPS, LEARNING_RATE, OPTIMIZE_MODES
from age_cgan.backend import read_values, value_and_grad
from age_cgan.data import normalize


def objective(models, mode: str):
    """value_and_grad in x = [z | w] (B, z_dim + 1) of sum_i w_i * loss_i(z_i), compiled once
    per mode and kept on ``models``: the gradient's first z_dim columns are each face's
    d loss_i / d z_i (w = 1), its last column each face's loss (see the module notes)."""
    if mode not in models._compiled:
        generator = models.generator

        def split(x):
            return x[:, :-1], x[:, -1]

        if mode == "pixel":
            def loss(x, target, age, g_values):
                z, w = split(x)
                image, _ = generator.stateless_call(*g_values, [z, age], training=False)
                return keras.ops.sum(w * losses.pixel_loss_per_sample(image, target))
        else:
            fr = models.face_recognizer

            def loss(x, target, age, g_values, fr_values):
                z, w = split(x)
                image, _ = generator.stateless_call(*g_values, [z, age], training=False)
                embedding, _ = fr.stateless_call(*fr_values, image, training=False)
                return keras.ops.sum(w * losses.identity_loss_per_sample(embedding, target))
        models._compiled[mode] = value_and_grad(loss)
    return models._compiled[mode]


def optimize_latents(models, faces: np.ndarray, z0: np.ndarray, categories, mode: str,
                     steps: int | None = None, learning_rate: float = LEARNING_RATE,
                     progress: bool = True, batch_size: int | None = None,
                     desc: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Adam on z from z0 for a batch of uint8 faces (B, S, S, 3), each at its category (B,);
    G and FR frozen. All faces step together; each keeps its own best z.

    ``batch_size``: faces per compiled call (default: all B at once); the last chunk is padded
    to the same size (copies of its last face, discarded), so one compilation serves every
    chunk. Returns (the z of lowest loss per face (B, z_dim), the losses (steps + 1, B): at z0,
    then after each step).
    """
    if mode not in ("pixel", "identity"):
        raise ValueError(f"optimize must be one of {OPTIMIZE_MODES}, not {mode!r}")
    faces = np.asarray(faces)
    z0 = np.asarray(z0, np.float32)
    categories = np.asarray(categories, np.int64).reshape(-1)
    if faces.ndim != 4 or not len(faces) == len(z0) == len(categories):
        raise ValueError(f"faces (B, S, S, 3), z0 (B, z) and categories (B,) must agree: "
                         f"{faces.shape}, {z0.shape}, {categories.shape}")
    steps = DEFAULT_STEPS[mode] if steps is None else int(steps)
    n = len(faces)
    chunk = n if not batch_size else max(1, min(int(batch_size), n))
    best = np.zeros_like(z0)
    history = np.zeros((steps + 1, n), np.float32)
    chunks = range(0, n, chunk)
    for number, begin in enumerate(chunks):
        rows = np.arange(begin, min(begin + chunk, n))
        padded = np.concatenate([rows, np.full(chunk - len(rows), rows[-1])])
        label = desc or f"{mode} optimisation"
        if len(chunks) > 1:
            label += f" ({number + 1}/{len(chunks)})"
        z, losses_ = _optimize_chunk(models, faces[padded], z0[padded], categories[padded],
                                     mode, steps, learning_rate, progress, label)
        best[rows] = z[:len(rows)]
        history[:, rows] = losses_[:, :len(rows)]
    return best, history


def _optimize_chunk(models, faces, z0, categories, mode, steps, learning_rate, progress, desc):
    from tqdm.auto import tqdm

    fn = objective(models, mode)
    to_tensor = keras.ops.convert_to_tensor
    x = to_tensor(normalize(faces))
    args = [read_values(models.generator)]
    if mode == "identity":
        fr = models.face_recognizer
        target = fr(x, training=False)  # FR(x), (B, 128)
        args.append(read_values(fr))
    else:
        target = x
    age = to_tensor(models.bins.one_hot(categories))
    z = z0.copy()
    weights = np.ones((len(z), 1), np.float32)
    adam = Adam(z.shape, learning_rate)
    best_z, best_loss = z.copy(), np.full(len(z), np.inf, np.float32)
    history = np.zeros((steps + 1, len(z)), np.float32)
    bar = tqdm(range(steps + 1), desc=desc, unit="step", disable=not progress, leave=False,
               dynamic_ncols=True)
    for step in bar:
        _, grad = fn(to_tensor(np.concatenate([z, weights], axis=1)), target, age, *args)
        grad = keras.ops.convert_to_numpy(grad)
        values = grad[:, -1].astype(np.float32)
        better = values < best_loss
        best_z[better], best_loss[better] = z[better], values[better]
        history[step] = values
        bar.set_postfix(loss=f"{values.mean():.4f}")
        if step < steps:
            z = adam.update(z, grad[:, :-1])
    bar.close()
    return best_z, history


class Adam:
    """Adam (Kingma & Ba 2015) on one numpy array; the defaults of the paper."""

    def __init__(self, shape, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
        self.m, self.v = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        self.lr, self.b1, self.b2, self.eps, self.t = learning_rate, beta_1, beta_2, epsilon, 0

    def update(self, x, grad):
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * grad
        self.v = self.b2 * self.v + (1 - self.b2) * np.square(grad)
        m_hat = self.m / (1 - self.b1 ** self.t)
        v_hat = self.v / (1 - self.b2 ** self.t)
        return (x - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)).astype(np.float32)
