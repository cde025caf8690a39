"""The networks of a model folder, loaded once, and every per-photo method run on them.

``AgingModels.from_run`` loads a run folder (or a packaged model, which is one): the encoder and
generator (Age-cGAN), and where the folder has them the age estimator and the aging network
(``train.py --stage age`` / ``--stage aging``); the face recogniser is loaded on first use.
Each network may be replaced by an explicit ``.keras`` file. ``age`` ages one face crop by
method name; ``age_faces`` a batch (evaluation). The methods themselves live beside this
module: ``latent`` (z0, z*_pixel, z*_IP), ``difference``, ``network``.

The aging network may read another side than the others (``image_size``, e.g. 128 px beside
64 px): each network gets the faces resized to its own side (``data.resize_faces``).
"""

from __future__ import annotations

import time
import warnings

import keras
import numpy as np

from age_cgan.ages import AgeBins
from age_cgan.aging.difference import difference_changes
from age_cgan.aging.latent import optimize_latents
from age_cgan.aging.methods import (CHANGE_METHODS, DEFAULT_STEPS, DEFAULT_STRENGTH,
                                    FALLBACK_METHOD, LATENT_MODE, LEARNING_RATE, METHOD_NEEDS,
                                    METHODS, OPTIMIZE_MODES, PHOTO_METHODS, check_method)
from age_cgan.aging.loading import PROTOTYPES_FILE, load_network, load_prototypes, run_config
from age_cgan.aging.network import estimate_ages, network_changes
from age_cgan.aging.prototype import PrototypeAger, PrototypeStrengths
from age_cgan.aging.result import AgedFace, add_change
from age_cgan.data import denormalize, normalize, resize_faces
from age_cgan.errors import setting, trained_by
from age_cgan.prototypes import Prototypes
from age_cgan.prototypes.landmarks import crop_landmarks
from age_cgan.runs import (RUN_FR, MissingModel, RunFolder, RunFolderError,
                           face_recognizer_weights, load_face_recognizer)

#: Networks a model folder may hold besides the encoder and generator (image-to-image aging).
OPTIONAL_NETWORKS = ("age_estimator", "aging_network")


class AgingModels:
    """Encoder, generator, age bins, the optional age estimator and aging network, and (loaded
    on first use) the face recogniser of a run."""

    def __init__(self, encoder, generator, bins: AgeBins, config: dict | None = None,
                 face_recognizer=None, run: RunFolder | None = None, age_estimator=None,
                 aging_network=None, prototypes: Prototypes | None = None,
                 notes: list[str] | None = None):
        self.encoder, self.generator, self.bins = encoder, generator, AgeBins.parse(bins)
        self.age_estimator, self.aging_network = age_estimator, aging_network
        self.config = dict(config or {})
        self.prototypes = prototypes
        #: One-line notes of what was not loaded (a damaged prototype file) and what is used.
        self.notes = list(notes or [])
        self.prototype_strengths = PrototypeStrengths.from_config(
            self.config.get("prototype_strengths"))
        self._prototype_ager = None
        self.run = run
        self._face_recognizer = face_recognizer
        self._compiled = {}
        self._check_shapes()

    # --- loading ------------------------------------------------------------------------------
    @classmethod
    def from_run(cls, run=None, encoder=None, generator=None, face_recognizer=None,
                 age_bins=None, age_estimator=None, aging_network=None,
                 prototypes=None) -> "AgingModels":
        """Load from a run folder; paths given replace the run's files. Without a run, both E
        and G paths are needed (or the aging network's) and the age bins are ``age_bins``
        (default: the paper's six). Raises RunFolderError with what is missing or damaged.
        """
        folder = RunFolder(run) if run is not None else None
        given = {"encoder": encoder, "generator": generator, "age_estimator": age_estimator,
                 "aging_network": aging_network}
        if folder is not None:
            config = run_config(folder, given)
        elif (encoder is None or generator is None) and aging_network is None:
            raise RunFolderError(f"without {setting('run')}, both {setting('encoder')} and "
                                 f"{setting('generator')} files are needed")
        else:
            config = {}
        if age_bins is not None:
            config["age_bins"] = AgeBins.parse(age_bins).spec
        models = {name: load_network(folder, name, path) for name, path in given.items()}
        fr = load_network(None, "face_recognizer", face_recognizer) if face_recognizer else None
        bins = AgeBins.parse(config.get("age_bins"))
        found, notes = load_prototypes(folder, prototypes, bins)
        return cls(models["encoder"], models["generator"], bins, config, fr, folder,
                   models["age_estimator"], models["aging_network"], found, notes)

    def _check_shapes(self):
        problems = []
        sizes = {}
        if self.encoder is not None:
            sizes["encoder input"] = self.encoder.input_shape[1]
        if self.generator is not None:
            sizes["generator output"] = self.generator.output_shape[1]
            g_z, g_age = (shape[-1] for shape in self.generator.input_shape)
            z_dim = self.encoder.output_shape[-1] if self.encoder is not None else g_z
            if g_z != z_dim or self.config.get("z_dim", z_dim) != z_dim:
                problems.append(f"encoder z {z_dim}, generator z {g_z}, config z_dim "
                                f"{self.config.get('z_dim')}")
            if g_age != self.bins.num_ages:
                problems.append(f"the generator has {g_age} age inputs but the age bins "
                                f"{self.bins.spec!r} are {self.bins.num_ages}")
        for name in OPTIONAL_NETWORKS:
            network = getattr(self, name)
            if network is None:
                continue
            if name == "age_estimator":  # the aging network may read any side (resized to it)
                sizes[f"{name} input"] = network.input_shape[1]
            ages = network.input_shape[1][-1] if name == "aging_network" \
                else network.output_shape[0][-1]
            if ages != self.bins.num_ages:
                problems.append(f"the {name} has {ages} age categories but the age bins "
                                f"{self.bins.spec!r} are {self.bins.num_ages}")
        if "image_size" in self.config:
            sizes["config image_size"] = self.config["image_size"]
        if len(set(sizes.values())) > 1:
            problems.append("sizes differ: " + ", ".join(f"{k} {v}" for k, v in sizes.items()))
        if problems:
            raise RunFolderError("the networks do not fit together: " + "; ".join(problems))

    @property
    def image_size(self) -> int:
        """The encoder's side, else the age estimator's, else (alone) the aging network's."""
        if self.encoder is not None:
            return int(self.encoder.input_shape[1])
        if self.age_estimator is not None:
            return int(self.age_estimator.input_shape[1])
        return int(self.aging_network.input_shape[0][1])

    @property
    def z_dim(self) -> int:
        return int(self.need("encoder").output_shape[-1])

    def need(self, network: str) -> keras.Model:
        """The network, or a MissingModel naming the file and the stage that trains it."""
        model = getattr(self, network)
        if model is None:
            where = self.run.path if self.run is not None else "the files given"
            raise MissingModel(f"{where} has no {network} (models/{network}.keras), which this "
                               f"method needs: train it with {trained_by(network)}, or choose "
                               f"another {setting('method')}", network)
        return model

    def has(self, network: str) -> bool:
        """Whether the model holds ``network`` (an attribute named as in ``METHOD_NEEDS``); the
        face recogniser counts when trained (the run's, or a file given), not one built
        untrained on first use."""
        if network == "face_recognizer":
            return self._face_recognizer is not None or (
                self.run is not None and self.run.has_model("face_recognizer"))
        return getattr(self, network, None) is not None

    def unavailable_reason(self, method: str) -> str | None:
        """Why this model cannot run ``method`` (the first network it lacks, and how to get
        it), or None when it can: the one check infer.py, the page and evaluate.py use."""
        missing = self._missing(method)
        if missing is None:
            return None
        if missing == "prototypes":
            return self._no_prototypes(method)
        return (f"{self._where()} has no {missing.replace('_', ' ')} (models/{missing}.keras), "
                f"which the {method} method needs: train it with {trained_by(missing)}")

    def _missing(self, method: str) -> str | None:
        """The first network ``method`` needs that this model lacks, or None."""
        check_method(method)
        return next((n for n in METHOD_NEEDS[method] if not self.has(n)), None)

    def _where(self) -> str:
        return "these networks" if self.run is None else str(self.run.path)

    def available_methods(self) -> tuple[str, ...]:
        """The methods this model can run, its default first."""
        default = self.default_method()[0]
        return (default, *(m for m in METHODS
                           if m != default and self.unavailable_reason(m) is None))

    def default_method(self) -> tuple[str, str | None]:
        """(the method to use when none is asked for, a one-line note when that is a fallback):
        the aging network where the model has it, else the model's own Age-cGAN method."""
        named = self.config.get("default_method")
        if named == "prototype" and self.unavailable_reason("prototype") is None:
            return "prototype", None
        if self.unavailable_reason("network") is None:
            return "network", (f"{self._where()} has no usable {PROTOTYPES_FILE}: using the "
                               "aging network" if named == "prototype" else None)
        if self.unavailable_reason("prototype") is None:
            return "prototype", None
        method = named if named in OPTIMIZE_MODES else FALLBACK_METHOD
        missing = self._missing("network")
        return method, (f"{self._where()} has no {missing.replace('_', ' ')} "
                        f"(models/{missing}.keras): using the Age-cGAN method {method}")

    def _no_prototypes(self, method: str) -> str:
        return (f"{self._where()} has no age prototypes ({PROTOTYPES_FILE}), which the {method} "
                f"method needs: build them with python -m age_cgan.prototypes build DATA "
                f"RUN/{PROTOTYPES_FILE}")

    def need_prototypes(self) -> PrototypeAger:
        """The ager of the age prototypes, or a MissingModel naming the file and the command
        that builds it."""
        if self.prototypes is None:
            raise MissingModel(f"{self._no_prototypes('prototype')}, or choose another "
                               f"{setting('method')}", "prototypes")
        if self._prototype_ager is None:
            self._prototype_ager = PrototypeAger(self.prototypes, self.prototype_strengths)
        return self._prototype_ager

    def default_strength(self, method: str) -> float:
        """The model's strength for ``method`` (config ``default_strength`` is its default
        method's, ``network_strength`` the aging network's beside the prototypes), else 1."""
        own = self.config.get("default_method")
        if method == own:  # (the prototype method's parts: config prototype_strengths)
            return float(self.config.get("default_strength", DEFAULT_STRENGTH))
        if method == "network" and "network_strength" in self.config:
            return float(self.config["network_strength"])
        if own is None and method == "network":
            return float(self.config.get("default_strength", DEFAULT_STRENGTH))
        return DEFAULT_STRENGTH

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
        """E(faces): uint8 (N, S, S, 3), resized to ``image_size``, -> z0 float32 (N, z_dim)."""
        encoder = self.need("encoder")
        faces = resize_faces(faces, self.image_size)
        return keras.ops.convert_to_numpy(encoder(normalize(faces), training=False))

    def generate(self, z: np.ndarray, categories) -> np.ndarray:
        """G(z, y) for one z (z_dim,) and each category -> float32 (n, S, S, 3) in [-1, 1]."""
        categories = list(categories)
        zs = np.repeat(np.asarray(z, np.float32)[None], len(categories), axis=0)
        ages = self.bins.one_hot(categories)
        return keras.ops.convert_to_numpy(self.need("generator")([zs, ages], training=False))

    def generate_batch(self, z, categories, batch_size=256, per_face=None) -> np.ndarray:
        """G(z_i, y) for each face i and each category of ``categories`` (or its own
        ``per_face`` category): float32 (B, n, S, S, 3)."""
        n_faces = len(z)
        if per_face is not None:
            cats, columns, zs = np.asarray(per_face, np.int64), 1, z
        else:
            columns = len(categories)
            cats = np.tile(categories, n_faces)
            zs = np.repeat(z, columns, axis=0)
        ages = self.bins.one_hot(cats)
        generator = self.need("generator")
        out = [keras.ops.convert_to_numpy(generator(
            [zs[i:i + batch_size], ages[i:i + batch_size]], training=False))
            for i in range(0, len(zs), batch_size)]
        return np.concatenate(out).reshape(n_faces, columns, *out[0].shape[1:])

    @staticmethod
    def nearest_category(face: np.ndarray, outputs: np.ndarray) -> int:
        """Index of the output (G(z, y) for each category y, float in [-1, 1]) nearest to the
        uint8 face in mean squared pixels: the person's category as the networks see it."""
        errors = np.mean(np.square(outputs - normalize(face)[None]), axis=(1, 2, 3))
        return int(np.argmin(errors))

    def estimate_sources(self, faces: np.ndarray):
        """The age estimator's guess of each uint8 face's category (N,) (resized to its side),
        its probability (N,) and years (N,); MissingModel without an estimator."""
        probabilities, years = estimate_ages(self.need("age_estimator"),
                                             resize_faces(faces, self.image_size))
        guess = probabilities.argmax(axis=1)
        return guess, probabilities[np.arange(len(guess)), guess], years

    # --- per-image latent optimisation ---------------------------------------------------------
    def optimize_latents(self, faces, z0, categories, mode: str, steps: int | None = None,
                         learning_rate: float = LEARNING_RATE, progress: bool = True,
                         batch_size: int | None = None, desc: str | None = None):
        """``latent.optimize_latents`` on these networks, the faces resized to ``image_size``:
        (best z (B, z_dim), losses)."""
        return optimize_latents(self, resize_faces(faces, self.image_size), z0, categories,
                                mode, steps, learning_rate, progress, batch_size, desc)

    def optimize_latent(self, face, z0, category: int, mode: str, steps: int | None = None,
                        learning_rate: float = LEARNING_RATE, progress: bool = True):
        """One uint8 face (S, S, 3) at ``category`` (a batch of one): (z (z_dim,), the loss at
        z0 then after each step)."""
        z, history = self.optimize_latents(np.asarray(face)[None],
                                           np.asarray(z0, np.float32)[None], [int(category)],
                                           mode, steps, learning_rate, progress)
        return z[0], [float(v) for v in history[:, 0]]

    # --- any per-photo method on a batch --------------------------------------------------------
    def latents(self, faces: np.ndarray, sources, method: str, steps: int | None = None,
                learning_rate: float = LEARNING_RATE, progress: bool = True,
                batch_size: int | None = None, z0: np.ndarray | None = None):
        """The latent ``method`` uses for each uint8 face (B, S, S, 3) at its source category
        (B,): (z (B, z_dim), z0 (B, z_dim), the optimisation's losses (steps + 1, B));
        (None, None, no losses) for the aging network, which has none."""
        check_method(method)
        mode = LATENT_MODE[method]
        if mode is None:
            return None, None, np.zeros((0, len(faces)), np.float32)
        z0 = self.encode(faces) if z0 is None else np.asarray(z0, np.float32)
        if mode == "none":
            return z0, z0, np.zeros((0, len(z0)), np.float32)
        z, history = self.optimize_latents(
            faces, z0, sources, mode, DEFAULT_STEPS[method] if steps is None else steps,
            learning_rate, progress, batch_size, desc=f"{method} pivot")
        return z, z0, history

    def changes(self, faces, z, sources, method: str, categories, strength: float,
                batch_size: int = 256) -> np.ndarray:
        """What a change method (``CHANGE_METHODS``) adds to each photo for each category:
        float32 (B, n, T, T, 3) in [-1, 1] units at the side T of the network that made it
        (``add_change`` resizes it to a photo)."""
        if method == "network":
            return network_changes(self.need("aging_network"), faces, sources, categories,
                                   strength, batch_size)
        return difference_changes(self, np.asarray(z, np.float32), sources, categories,
                                  strength, batch_size)

    def images_from_latents(self, faces: np.ndarray, z, sources, method: str,
                            categories=None, strength: float = DEFAULT_STRENGTH,
                            batch_size: int = 256) -> np.ndarray:
        """The outputs of ``method`` from its latents for uint8 faces (B, S, S, 3) of any side:
        uint8 (B, n, S, S, 3) at that side (G(z, y) resized to it), one column per category of
        ``categories`` (default: every category). ``difference`` and ``network`` add their
        change from the source age (B,) to each category to the photo itself."""
        check_method(method)
        categories = list(range(self.bins.num_ages)) if categories is None else list(categories)
        sources = np.asarray(sources, np.int64).reshape(-1)
        if method == "prototype":
            ager = self.need_prototypes()
            return np.stack([ager.age(face, source, categories, strength, crop_landmarks(face))
                             for face, source in zip(faces, sources)])
        if method not in CHANGE_METHODS:
            made = denormalize(self.generate_batch(np.asarray(z, np.float32),
                                                   np.array(categories), batch_size))
            return np.stack([resize_faces(columns, faces.shape[1]) for columns in made])
        change = self.changes(faces, z, sources, method, np.array(categories), strength,
                              batch_size)
        return np.stack([add_change(face, c) for face, c in zip(faces, change)])

    def age_faces(self, faces: np.ndarray, sources, method: str, steps: int | None = None,
                  categories=None, strength: float = DEFAULT_STRENGTH,
                  learning_rate: float = LEARNING_RATE, progress: bool = True,
                  batch_size: int | None = None) -> np.ndarray:
        """A batch of uint8 faces (B, S, S, 3) of any side at their source categories (B,)
        through ``method``: uint8 (B, n, S, S, 3) at their side, one column per category
        (default: all); each network reads them at its own side."""
        z, _, _ = self.latents(faces, sources, method, steps, learning_rate, progress, batch_size)
        return self.images_from_latents(faces, z, sources, method, categories, strength)

    # --- everything for one face --------------------------------------------------------------
    def age(self, face: np.ndarray, optimize: str = "none", steps: int | None = None,
            source_age: float | None = None, categories=None, learning_rate: float = LEARNING_RATE,
            progress: bool = True, strength: float = DEFAULT_STRENGTH,
            detail: np.ndarray | None = None) -> AgedFace:
        """One uint8 face crop (S, S, 3) -> AgedFace.

        ``optimize`` is any method of ``METHODS``. The source category is ``source_age``'s, else
        the age estimator's guess, else (no estimator) the category whose reconstruction from
        z0 is nearest to the face. ``difference`` / ``network`` add their change (``strength``
        times) to the photo, and to ``detail`` (the same crop at its own size) when given. An
        aging network of another side than the face's reads ``detail`` resized to its side
        (sharper than the face upsampled) when given; the age estimator reads the face."""
        start = time.perf_counter()
        check_method(optimize)
        if face.shape != (self.image_size, self.image_size, 3):
            raise ValueError(f"face must be ({self.image_size}, {self.image_size}, 3), "
                             f"got {face.shape}")
        categories = list(range(self.bins.num_ages)) if categories is None else list(categories)
        latent_free = LATENT_MODE[optimize] is None
        z0 = None if latent_free else self.encode(face[None])[0]
        at_z0 = None  # G(z0, y) for every category, when computed to estimate the source
        confidence = years = None
        if source_age is not None:
            source, by = int(self.bins.category(source_age)), "given"
            if source < 0:
                raise ValueError(f"source age {source_age} is in no age category "
                                 f"({self.bins.spec})")
        elif self.age_estimator is not None:
            guess, p, y = self.estimate_sources(face[None])
            source, confidence, years = int(guess[0]), float(p[0]), float(y[0])
            years = self.bins.shown_years(years, source)  # None: they would contradict it
            by = "age estimator"
        else:
            at_z0 = self.generate(self.encode(face[None])[0] if z0 is None else z0,
                                  range(self.bins.num_ages))
            source, by = self.nearest_category(face, at_z0), "nearest reconstruction"
        z, history, steps_done = z0, [], 0
        if not latent_free and optimize != "none":
            steps_done = DEFAULT_STEPS[optimize] if steps is None else int(steps)
            z, history = self.optimize_latent(face, z0, source, LATENT_MODE[optimize],
                                              steps_done, learning_rate, progress)
        details = {}
        if optimize == "prototype":
            crop = face if detail is None else detail
            points = crop_landmarks(crop)  # None: the category's mean shape stands in
            photo_at = self.need_prototypes().age(crop, source, [source] + categories, strength,
                                                  points)
            images = photo_at if detail is None else resize_faces(photo_at, self.image_size)
            details = {"landmarks": "own" if points is not None else "mean shape"}
            if detail is not None:
                details.update(detail=detail, aged_detail=photo_at[1:],
                               reconstruction_detail=photo_at[0])
        elif optimize in CHANGE_METHODS:
            # an aging network of another side reads the sharper detail (resized to its side)
            seen = detail if optimize == "network" and detail is not None and self.need(
                "aging_network").input_shape[0][1] != self.image_size else face
            change = self.changes(seen[None], None if z is None else z[None], [source],
                                  optimize, [source] + categories, strength)[0]
            photo_at = add_change(face, change)  # the photo at its own age, then the targets
            if optimize == "difference":  # the reconstruction is G's pivot, the ages the photo's
                photo_at[0] = denormalize(self.generate(z, [source]))[0]
            images = photo_at
            if detail is not None:
                aged_detail = add_change(detail, change)
                details = {"detail": detail, "aged_detail": aged_detail[1:],
                           "reconstruction_detail": aged_detail[0]
                           if optimize == "network" else None}
        elif optimize == "none" and at_z0 is not None:
            images = denormalize(at_z0[[source] + categories])
        else:
            images = denormalize(self.generate(z, [source] + categories))
        return AgedFace(
            face=face, reconstruction=images[0], aged=images[1:], categories=categories,
            labels=[self.bins.labels[c] for c in categories], source_category=source,
            source_label=self.bins.labels[source], source_given=source_age is not None,
            z0=z0, z=None if z is None else np.asarray(z), optimize=optimize, steps=steps_done,
            loss_history=history, seconds=time.perf_counter() - start,
            source_confidence=confidence, source_years=years, source_by=by,
            strength=float(strength) if optimize in PHOTO_METHODS else None, **details)

