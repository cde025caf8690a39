"""A face at every age: face -> z0 = E(face) -> optional per-image latent optimisation -> G(z, y).

The networks come from a run folder (``AgingModels.from_run``), each optionally replaced by an
explicit ``.keras`` file. All calls are in inference mode (``training=False``) and change no
weight: the latent optimisation differentiates only with respect to z, through
``Model.stateless_call`` on the frozen values, compiled by ``backend.value_and_grad``.

Per-image optimisation (the paper's section 3.2, design decision 6), from z0 with G frozen:

* ``pixel``: z*_pixel = argmin_z mean((x - G(z, y_src))^2)
* ``identity``: z*_IP = argmin_z ||FR(x) - FR(G(z, y_src))||, the identity-preserving one

where y_src is the category of the person's age in the photo. The paper knows it from the
dataset; a user's photo has none, so y_src is ``source_age`` when the user gives it, else the
category whose reconstruction from z0, G(z0, y), is nearest to the face in pixels (one batch of
forward passes over all categories). We chose that over averaging the loss over every category
because (a) averaging the pixel loss pulls every age's output towards the photo, i.e. undoes the
aging, and (b) an averaged identity loss costs one FR pass per category and step (six times the
time, past the CPU target), while FR is meant to be age-invariant anyway, so matching identity at
the person's own age is what the paper does and what carries over to the other ages.

Adam on z (numpy, a few lines) takes ``steps`` updates; the z with the lowest loss is kept.

Per-photo methods beyond the paper's (design decision 12): the latents above are only as good
as G's knowledge of the person, and a CPU-trained G reconstructs a stranger (z0 same-person
~5%, see shared measurements). ``difference`` keeps the photo and adds what G changes between
ages at the photo's pivot: x + s * (G(z*, y) - G(z*, y_src)) with z* = z*_pixel, so the person
comes from the photo and the aging from G. On a greyscale photo the difference is added to
its luminance only (a colour G would otherwise tint it). ``METHODS`` lists every method by
name; ``AgingModels.age_faces`` runs any of them on a batch.

A batch of faces is optimised at once (``optimize_latents``): each face's loss depends on its own
z only (the networks run in inference mode, so BatchNorm uses its stored statistics), so the
gradient of the sum of the per-face losses with respect to z_i is face i's own gradient, and
Adam acts per coordinate: the result for each face is that of optimising it alone. The per-face
losses come out of the same compiled call as the gradient: the objective is
sum_i w_i * loss_i(z_i) with unit weights w appended to z as one more column, and its derivative
in w_i is loss_i. ``optimize_latent`` (one face) is the batch of one.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path

import keras
import numpy as np

from age_cgan import losses
from age_cgan.ages import AgeBins
from age_cgan.data import denormalize, normalize
from age_cgan.backend import read_values, value_and_grad
from age_cgan.errors import setting, trained_by
from age_cgan.runs import (RUN_FR, RunFolder, RunFolderError, face_recognizer_weights,
                           load_face_recognizer, load_keras_file)

OPTIMIZE_MODES = ("none", "pixel", "identity", "difference")
#: Every per-photo method by name (``none`` is z0 = E(x)); evaluation and the app list these.
METHODS = OPTIMIZE_MODES
#: What each method's name means in tables and pages.
METHOD_TITLES = {"none": "z0 = E(x)", "pixel": "z*_pixel", "identity": "z*_IP",
                 "difference": "photo + G's age difference"}
#: Adam updates per face. Identity: ~0.43 s a step on the shared 2-core CPU (G, then FR =
#: InceptionResNetV2 at 160 px, forward and back), so 50 steps take ~22 s, inside the < 30 s
#: target; a pixel step (G only) takes ~80 ms. See benchmarks/bench_infer.py. ``difference``
#: optimises its pivot as ``pixel`` does.
DEFAULT_STEPS = {"none": 0, "pixel": 100, "identity": 50, "difference": 100}
#: The latent each method optimises (``difference`` adds G's change at its z*_pixel pivot).
LATENT_MODE = {"none": "none", "pixel": "pixel", "identity": "identity", "difference": "pixel"}
#: How much of G's age difference ``difference`` adds to the photo.
DEFAULT_STRENGTH = 1.0
#: Adam moves each coordinate of z (~N(0, 1)) by at most about this much a step.
LEARNING_RATE = 0.02
REQUIRED_CONFIG = ("image_size", "z_dim", "age_bins")


@dataclasses.dataclass
class AgedFace:
    """The outputs for one face: uint8 images (S, S, 3) and the optimisation's record."""

    face: np.ndarray  # the input crop
    reconstruction: np.ndarray  # G(z, y_src)
    aged: np.ndarray  # (n, S, S, 3): G(z, y) for each requested category
    categories: list[int]  # the categories of ``aged``
    labels: list[str]  # their labels ("0-18", ..., "60+")
    source_category: int
    source_label: str
    source_given: bool  # True: from source_age; False: estimated from the reconstructions
    z0: np.ndarray
    z: np.ndarray
    optimize: str
    steps: int
    loss_history: list[float]  # the loss at z0, then after each step ([] for "none")
    seconds: float

    @property
    def z_distance(self) -> float:
        """How far the optimisation moved z from E(face) (Euclidean)."""
        return float(np.linalg.norm(self.z - self.z0))

    def record(self) -> dict:
        """JSON-ready summary (no images)."""
        history = self.loss_history
        return {
            "source_category": self.source_label,
            "source_category_given": self.source_given,
            "optimize": self.optimize,
            "steps": self.steps,
            "loss_start": round(history[0], 6) if history else None,
            "loss_end": round(min(history), 6) if history else None,
            "z0_distance": round(self.z_distance, 4),
            "seconds": round(self.seconds, 3),
        }


class AgingModels:
    """Encoder, generator, age bins, and (loaded on first use) the face recogniser of a run."""

    def __init__(self, encoder, generator, bins: AgeBins, config: dict | None = None,
                 face_recognizer=None, run: RunFolder | None = None):
        self.encoder, self.generator, self.bins = encoder, generator, AgeBins.parse(bins)
        self.config = dict(config or {})
        self.run = run
        self._face_recognizer = face_recognizer
        self._compiled = {}
        self._check_shapes()

    # --- loading ------------------------------------------------------------------------------
    @classmethod
    def from_run(cls, run=None, encoder=None, generator=None, face_recognizer=None,
                 age_bins=None) -> "AgingModels":
        """Load from a run folder; ``encoder`` / ``generator`` / ``face_recognizer`` paths
        replace the run's files. Without a run, both E and G paths are needed and the age bins
        are ``age_bins`` (default: the paper's six). Raises RunFolderError with what is missing.
        """
        folder = RunFolder(run) if run is not None else None
        if folder is not None:
            config = _run_config(folder, {"generator": generator, "encoder": encoder})
        elif encoder is None or generator is None:
            raise RunFolderError(f"without {setting('run')}, both {setting('encoder')} and "
                                 f"{setting('generator')} files are needed")
        else:
            config = {}
        if age_bins is not None:
            config["age_bins"] = AgeBins.parse(age_bins).spec
        models = {name: _load(folder, name, path) for name, path in
                  (("generator", generator), ("encoder", encoder))}
        fr = _load(None, "face_recognizer", face_recognizer) if face_recognizer else None
        bins = AgeBins.parse(config.get("age_bins"))
        return cls(models["encoder"], models["generator"], bins, config, fr, folder)

    def _check_shapes(self):
        size = self.encoder.input_shape[1]
        z_dim = self.encoder.output_shape[-1]
        g_z, g_age = (shape[-1] for shape in self.generator.input_shape)
        problems = []
        if self.config.get("image_size", size) != size:
            problems.append(f"config image_size {self.config['image_size']} != encoder "
                            f"input {size}")
        if g_z != z_dim or self.config.get("z_dim", z_dim) != z_dim:
            problems.append(f"encoder z {z_dim}, generator z {g_z}, config z_dim "
                            f"{self.config.get('z_dim')}")
        if g_age != self.bins.num_ages:
            problems.append(f"the generator has {g_age} age inputs but the age bins "
                            f"{self.bins.spec!r} are {self.bins.num_ages}")
        if self.generator.output_shape[1] != size:
            problems.append(f"generator output {self.generator.output_shape[1]} px != encoder "
                            f"input {size} px")
        if problems:
            raise RunFolderError("the networks do not fit together: " + "; ".join(problems))

    @property
    def image_size(self) -> int:
        return int(self.encoder.input_shape[1])

    @property
    def z_dim(self) -> int:
        return int(self.encoder.output_shape[-1])

    @property
    def face_recognizer(self) -> keras.Model:
        """The run's trained FR; without one, a fresh InceptionResNetV2 FR (with a warning)."""
        if self._face_recognizer is None:
            # the run's own FR first, whatever fr_weights its last training command named
            weights = face_recognizer_weights(self.run, None,
                                              default=self.config.get("fr_weights") or "none")
            if weights != RUN_FR:
                warnings.warn(
                    "no trained face recogniser (models/face_recognizer.keras) in the run: "
                    f"building InceptionResNetV2 with weights={weights!r} and an untrained "
                    "embedding head, which does not recognise faces, so the identity method is "
                    "meaningless with it; prefer the pixel method", stacklevel=2)
            self._face_recognizer = load_face_recognizer(
                self.run, weights, self.image_size, self.config.get("fr_input_size", 160),
                self.config.get("arch", "tutorial"))
        return self._face_recognizer

    # --- forward passes -----------------------------------------------------------------------
    def encode(self, faces: np.ndarray) -> np.ndarray:
        """E(faces): uint8 (N, S, S, 3) -> z0 float32 (N, z_dim)."""
        return keras.ops.convert_to_numpy(self.encoder(normalize(faces), training=False))

    def generate(self, z: np.ndarray, categories) -> np.ndarray:
        """G(z, y) for one z (z_dim,) and each category -> float32 (n, S, S, 3) in [-1, 1]."""
        categories = list(categories)
        zs = np.repeat(np.asarray(z, np.float32)[None], len(categories), axis=0)
        ages = self.bins.one_hot(categories)
        return keras.ops.convert_to_numpy(self.generator([zs, ages], training=False))

    @staticmethod
    def nearest_category(face: np.ndarray, outputs: np.ndarray) -> int:
        """Index of the output (G(z, y) for each category y, float in [-1, 1]) nearest to the
        uint8 face in mean squared pixels: the person's category as the networks see it."""
        errors = np.mean(np.square(outputs - normalize(face)[None]), axis=(1, 2, 3))
        return int(np.argmin(errors))

    # --- per-image latent optimisation ---------------------------------------------------------
    def _objective(self, mode: str):
        """value_and_grad in x = [z | w] (B, z_dim + 1) of sum_i w_i * loss_i(z_i), compiled once
        per mode: the gradient's first z_dim columns are each face's d loss_i / d z_i (w = 1),
        its last column each face's loss (see the module notes)."""
        if mode not in self._compiled:
            generator = self.generator

            def split(x):
                return x[:, :-1], x[:, -1]

            if mode == "pixel":
                def loss(x, target, age, g_values):
                    z, w = split(x)
                    image, _ = generator.stateless_call(*g_values, [z, age], training=False)
                    return keras.ops.sum(w * losses.pixel_loss_per_sample(image, target))
            else:
                fr = self.face_recognizer

                def loss(x, target, age, g_values, fr_values):
                    z, w = split(x)
                    image, _ = generator.stateless_call(*g_values, [z, age], training=False)
                    embedding, _ = fr.stateless_call(*fr_values, image, training=False)
                    return keras.ops.sum(w * losses.identity_loss_per_sample(embedding, target))
            self._compiled[mode] = value_and_grad(loss)
        return self._compiled[mode]

    def optimize_latents(self, faces: np.ndarray, z0: np.ndarray, categories, mode: str,
                         steps: int | None = None, learning_rate: float = LEARNING_RATE,
                         progress: bool = True, batch_size: int | None = None,
                         desc: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Adam on z from z0 for a batch of uint8 faces (B, S, S, 3), each at its category
        (B,); G and FR frozen. All faces step together; each keeps its own best z.

        ``batch_size``: faces per compiled call (default: all B at once); the last chunk is
        padded to the same size (copies of its last face, discarded), so one compilation
        serves every chunk. Returns (the z of lowest loss per face (B, z_dim), the losses
        (steps + 1, B): at z0, then after each step).
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
            z, losses_ = self._optimize_chunk(faces[padded], z0[padded], categories[padded],
                                              mode, steps, learning_rate, progress, label)
            best[rows] = z[:len(rows)]
            history[:, rows] = losses_[:, :len(rows)]
        return best, history

    def _optimize_chunk(self, faces, z0, categories, mode, steps, learning_rate, progress, desc):
        from tqdm.auto import tqdm

        fn = self._objective(mode)
        to_tensor = keras.ops.convert_to_tensor
        x = to_tensor(normalize(faces))
        args = [read_values(self.generator)]
        if mode == "identity":
            fr = self.face_recognizer
            target = fr(x, training=False)  # FR(x), (B, 128)
            args.append(read_values(fr))
        else:
            target = x
        age = to_tensor(self.bins.one_hot(categories))
        z = z0.copy()
        weights = np.ones((len(z), 1), np.float32)
        adam = _Adam(z.shape, learning_rate)
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

    def optimize_latent(self, face: np.ndarray, z0: np.ndarray, category: int, mode: str,
                        steps: int | None = None, learning_rate: float = LEARNING_RATE,
                        progress: bool = True) -> tuple[np.ndarray, list[float]]:
        """Adam on z from z0 for one uint8 face (S, S, 3) at ``category``; G and FR frozen
        (``optimize_latents`` on a batch of one).

        Returns (the z of lowest loss (z_dim,), the loss at z0 then after each step).
        """
        z, history = self.optimize_latents(np.asarray(face)[None],
                                           np.asarray(z0, np.float32)[None], [int(category)],
                                           mode, steps, learning_rate, progress)
        return z[0], [float(v) for v in history[:, 0]]

    # --- any per-photo method on a batch --------------------------------------------------------
    def latents(self, faces: np.ndarray, sources, method: str, steps: int | None = None,
                learning_rate: float = LEARNING_RATE, progress: bool = True,
                batch_size: int | None = None, z0: np.ndarray | None = None):
        """The latent ``method`` uses for each uint8 face (B, S, S, 3) at its source category
        (B,): (z (B, z_dim), z0 (B, z_dim), the optimisation's losses (steps + 1, B))."""
        _check_method(method)
        z0 = self.encode(faces) if z0 is None else np.asarray(z0, np.float32)
        mode = LATENT_MODE[method]
        if mode == "none":
            return z0, z0, np.zeros((0, len(z0)), np.float32)
        z, history = self.optimize_latents(
            faces, z0, sources, mode, DEFAULT_STEPS[method] if steps is None else steps,
            learning_rate, progress, batch_size, desc=f"{method} pivot")
        return z, z0, history

    def images_from_latents(self, faces: np.ndarray, z: np.ndarray, sources, method: str,
                            categories=None, strength: float = DEFAULT_STRENGTH,
                            batch_size: int = 256) -> np.ndarray:
        """The outputs of ``method`` from its latents: uint8 (B, n, S, S, 3), one column per
        category of ``categories`` (default: every category), and the source category first
        when ``sources`` is given per face (B,). ``difference`` adds G's change from the source
        age to each category to the photo itself."""
        _check_method(method)
        categories = list(range(self.bins.num_ages)) if categories is None else list(categories)
        sources = np.asarray(sources, np.int64).reshape(-1)
        wanted = np.array(categories)
        z = np.asarray(z, np.float32)
        outputs = self._generate_batch(z, wanted, batch_size)  # (B, n, S, S, 3) in [-1, 1]
        if method != "difference":
            return denormalize(outputs)
        pivot = self._generate_batch(z, None, batch_size, per_face=sources)  # (B, 1, ...)
        change = strength * (outputs - pivot)
        gray = _is_gray(faces)
        change[gray] = change[gray].mean(axis=-1, keepdims=True)  # luminance only
        return denormalize(np.clip(normalize(faces)[:, None] + change, -1.0, 1.0))

    def _generate_batch(self, z, categories, batch_size, per_face=None) -> np.ndarray:
        """G(z_i, y) for each face i and each category of ``categories`` (or its own
        ``per_face`` category): float32 (B, n, S, S, 3)."""
        n_faces = len(z)
        if per_face is not None:
            cats, columns = np.asarray(per_face, np.int64), 1
            zs = z
        else:
            columns = len(categories)
            cats = np.tile(categories, n_faces)
            zs = np.repeat(z, columns, axis=0)
        ages = self.bins.one_hot(cats)
        out = [keras.ops.convert_to_numpy(self.generator(
            [zs[i:i + batch_size], ages[i:i + batch_size]], training=False))
            for i in range(0, len(zs), batch_size)]
        return np.concatenate(out).reshape(n_faces, columns, *out[0].shape[1:])

    def age_faces(self, faces: np.ndarray, sources, method: str, steps: int | None = None,
                  categories=None, strength: float = DEFAULT_STRENGTH,
                  learning_rate: float = LEARNING_RATE, progress: bool = True,
                  batch_size: int | None = None) -> np.ndarray:
        """A batch of uint8 faces (B, S, S, 3) at their source categories (B,) through
        ``method``: uint8 (B, n, S, S, 3), one column per category (default: all)."""
        z, _, _ = self.latents(faces, sources, method, steps, learning_rate, progress, batch_size)
        return self.images_from_latents(faces, z, sources, method, categories, strength)

    # --- everything for one face --------------------------------------------------------------
    def age(self, face: np.ndarray, optimize: str = "none", steps: int | None = None,
            source_age: float | None = None, categories=None, learning_rate: float = LEARNING_RATE,
            progress: bool = True, strength: float = DEFAULT_STRENGTH) -> AgedFace:
        """One uint8 face crop (S, S, 3) -> AgedFace (see the module notes for the steps).

        ``optimize`` is any of ``METHODS``; for ``difference`` the reconstruction is the pivot
        G(z*, y_src) and the aged faces are the photo plus G's change (``strength`` times)."""
        start = time.perf_counter()
        _check_method(optimize)
        if face.shape != (self.image_size, self.image_size, 3):
            raise ValueError(f"face must be ({self.image_size}, {self.image_size}, 3), "
                             f"got {face.shape}")
        categories = list(range(self.bins.num_ages)) if categories is None else list(categories)
        z0 = self.encode(face[None])[0]
        at_z0 = None  # G(z0, y) for every category, when computed to estimate the source
        if source_age is not None:
            source = int(self.bins.category(source_age))
            if source < 0:
                raise ValueError(f"source age {source_age} is in no age category "
                                 f"({self.bins.spec})")
        else:
            at_z0 = self.generate(z0, range(self.bins.num_ages))
            source = self.nearest_category(face, at_z0)
        z, history, steps_done = z0, [], 0
        if optimize != "none":
            steps_done = DEFAULT_STEPS[optimize] if steps is None else int(steps)
            z, history = self.optimize_latent(face, z0, source, LATENT_MODE[optimize],
                                              steps_done, learning_rate, progress)
        if optimize == "none" and at_z0 is not None:
            images = denormalize(at_z0[[source] + categories])
        elif optimize == "difference":  # the reconstruction is G's pivot, the ages the photo's
            images = np.concatenate([
                denormalize(self.generate(z, [source])),
                self.images_from_latents(face[None], z[None], [source], optimize, categories,
                                         strength)[0]])
        else:
            images = denormalize(self.generate(z, [source] + categories))
        return AgedFace(
            face=face, reconstruction=images[0], aged=images[1:], categories=categories,
            labels=[self.bins.labels[c] for c in categories], source_category=source,
            source_label=self.bins.labels[source], source_given=source_age is not None,
            z0=z0, z=np.asarray(z), optimize=optimize, steps=steps_done, loss_history=history,
            seconds=time.perf_counter() - start,
        )


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"the per-photo method must be one of {', '.join(METHODS)}, "
                         f"not {method!r}")


def _is_gray(faces: np.ndarray, tolerance: float = 6.0) -> np.ndarray:
    """(B,) True where a uint8 face (B, S, S, 3) is greyscale stored as RGB (its channels differ
    by at most ``tolerance`` levels on average, as scanned or JPEG-ed grey photos do)."""
    faces = np.asarray(faces, np.float32)
    spread = faces.max(axis=-1) - faces.min(axis=-1)
    return spread.reshape(len(faces), -1).mean(axis=1) <= tolerance


class _Adam:
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


def _run_config(folder: RunFolder, given: dict) -> dict:
    """The run's config, after checking that it and the networks not ``given`` are there."""
    if not folder.path.is_dir():
        raise RunFolderError(
            f"run folder {folder.path} does not exist; pass {setting('run')} with the folder "
            f"training wrote (e.g. logs/run), or {setting('encoder')} and "
            f"{setting('generator')} files"
        )
    config = folder.read_config()
    missing = [key for key in REQUIRED_CONFIG if key not in config]
    if missing:
        raise RunFolderError(
            f"{folder.config_path} is incomplete: no {', '.join(missing)}. "
            "Was it written by training? Train again into a fresh run folder."
        )
    needed = [name for name, path in given.items() if path is None and not folder.has_model(name)]
    if needed:
        raise RunFolderError(
            f"run folder {folder.path} is incomplete: "
            + ", ".join(str(folder.model_path(name)) for name in needed)
            + f" missing. Finish training first: {trained_by(needed[0], run=str(folder.path))}"
            f" (or {setting('stage', 'all')})."
        )
    return config


def _load(folder: RunFolder | None, network: str, path=None) -> keras.Model:
    if path is None:
        return folder.load_model(network)
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"{path} ({network}) does not exist")
    return load_keras_file(path, network, f"Give another {setting(network)} file.")
