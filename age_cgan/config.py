"""One frozen config per training invocation, written into the run folder.

``TrainConfig`` is the one source of the training settings: each field carries its default
(the book's or the paper's unless its help says why it departs) and its help, from which
``train.py``'s options are built (``age_cgan.cli.train``); ``RUN/config.json`` holds the fields
and is read back with ``TrainConfig.from_stored``. Invalid values raise ``SettingError`` naming
the setting, which the command line words as its flag.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing

from age_cgan.ages import DEFAULT_SPEC, AgeBins
from age_cgan.errors import SettingError, setting

#: Every stage, in the order a whole model is trained (``training.graph.STAGE_CLASSES``).
STAGE_ORDER = ("1", "2", "fr", "3", "age", "aging")
#: What each stage trains (train.py's --stage help; one list).
STAGE_TITLES = {
    "1": "Age-cGAN's conditional GAN",
    "2": "its encoder (needs 1)",
    "fr": "the face recogniser stage 3 and the identity method use (distilled from dlib's "
          "descriptors beside the faces)",
    "3": "identity fine-tuning of the encoder (needs 2; uses fr when trained)",
    "age": "the age estimator",
    "aging": "the image-to-image aging network of the default method (needs age)",
}
#: Names for several stages at once, each run in ``STAGE_ORDER``.
STAGE_GROUPS = {
    "network": ("age", "aging"),
    "age-cgan": ("1", "2", "3"),
    "all": STAGE_ORDER,
}
GROUP_TITLES = {
    "network": "the default method's networks: infer.py --method network",
    "age-cgan": "Age-cGAN without its face recogniser",
    "all": "every network of a model like the shipped one",
}
STAGE_CHOICES = (*STAGE_ORDER, *STAGE_GROUPS)


def stages_of(stage: str) -> tuple[str, ...]:
    """The stages ``--stage`` names, in training order (a group's, or the one stage)."""
    return STAGE_GROUPS.get(stage, (stage,))


def group_of(*stages: str) -> str:
    """The smallest stage group that trains all of ``stages`` (a hint's "or --stage X")."""
    return min((name for name, group in STAGE_GROUPS.items() if set(stages) <= set(group)),
               key=lambda name: len(STAGE_GROUPS[name]))


def stage_help() -> str:
    """--stage's help: each stage and group with what it trains, in training order."""
    stages = "; ".join(f"{name} = {title}" for name, title in STAGE_TITLES.items())
    groups = "; ".join(f"{name} = {', '.join(STAGE_GROUPS[name])} ({title})"
                       for name, title in GROUP_TITLES.items())
    return f"what to train, in this order: {stages}. Groups, run in that order: {groups}"


#: The aging network's loss weights (TrainConfig fields), by the term they weigh.
AGING_WEIGHTS = ("aging_adversarial_weight", "aging_age_weight", "aging_reconstruction_weight",
                 "aging_cycle_weight", "aging_change_weight", "aging_smoothness_weight",
                 "aging_tint_weight", "aging_pair_weight")


def _setting(default, help: str, **cli):
    """A ``TrainConfig`` field with its one-line help (the command line's, and the reason for
    its default; other settings in it by ``setting`` marker, which the command line words as
    flags); ``cli`` adds choices=, group= (mutually exclusive options) or flag=False
    (not on the command line)."""
    return dataclasses.field(default=default, metadata={"help": help, **cli})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run. The command line (``train.py``) is built from these
    fields and their help; ``RUN/config.json`` holds them and is read back into this class."""

    run: str = _setting("logs/run", "run folder for config, TensorBoard events, checkpoints, "
                        "samples and models")
    data: str | None = _setting(None, "UTKFace folder, wiki.mat / imdb.mat, or a CSV of "
                                "path,age (later stages reuse the run's)")
    stage: str = _setting("1", stage_help(), choices=STAGE_CHOICES)

    # --- the networks (a run keeps the values of its first stage) ---
    arch: str = _setting("tutorial", "network sizes: tutorial = the book's, lite = sized for a "
                         "CPU (networks.ARCHITECTURES)", choices=("tutorial", "lite"))
    image_size: int = _setting(64, "face size in pixels, a multiple of 16 (the tutorial's)")
    z_dim: int = _setting(100, "latent size (the paper's and the tutorial's)")
    age_bins: str = _setting(DEFAULT_SPEC, "age categories, e.g. '20-30,40-50' (the paper's six)")
    fr_input_size: int = _setting(160, "size the face is resized to inside FR, at least 75 (the "
                                  "book upsamples 3x to 192; 160 is lighter)")
    fr_weights: str | None = _setting(None, "FR backbone weights: imagenet | none | PATH to a "
                                      "local InceptionResNetV2 no-top weights file. Stage 3 "
                                      f"default: the run's trained FR ({setting('stage', 'fr')}) "
                                      "if present, else imagenet (the book); "
                                      f"{setting('stage', 'fr')} default: none (a random "
                                      "backbone, trained end to end)")

    # --- length and batches ---
    batch_size: int = _setting(128, "faces per step, the global batch over devices (the book's "
                               "text; its repository uses 2)")
    devices: int | str = _setting("all", "data parallel over N local devices, or all (every "
                                  "local GPU/TPU; one device on a CPU); the batch size must "
                                  "divide by the device count. JAX: keras.distribution."
                                  "DataParallel, TensorFlow: MirroredStrategy")
    steps: int | None = _setting(None, "total steps of each stage (overrides the epochs)",
                                 group="length")
    epochs: float | None = _setting(None, "epochs over the training faces (default: 100 for "
                                    "stage 1 as in the paper, 5 for stage 3, 10 for fr; stage 2 "
                                    f"draws {setting('stage2_pairs')} synthetic pairs)", group="length")
    stage2_pairs: int = _setting(100_000, "synthetic (z, y) pairs the encoder sees in stage 2 "
                                 "(the paper's 100k)")
    seed: int = _setting(0, "seeds initialisation, batches, latents and the split")
    test_fraction: float = _setting(0.1, "share of the faces held out (the paper: 10k of 120k)")

    # --- optimisers ---
    lr_gan: float = _setting(2e-4, "Adam learning rate of D and G (the book's)")
    beta1_gan: float = _setting(0.5, "Adam beta_1 of D and G (the book's)")
    lr_encoder: float = _setting(1e-3, "Adam learning rate of the encoder (the book compiles it "
                                 "with 'adam': the Keras default)")
    lr_identity: float = _setting(2e-4, "stage 3 Adam learning rate (the book's)")
    beta1_identity: float = _setting(0.5, "stage 3 Adam beta_1 (the book's)")
    lr_fr: float = _setting(1e-3, "stage fr Adam learning rate (the Keras default; the book "
                            "never trains FR)")
    finetune_generator: bool = _setting(False, "stage 3 also trains G (then D's adversarial "
                                        "term keeps G realistic)")
    mismatch_weight: float = _setting(0.0, "stage 1: weight of D's term that calls a real face "
                                      "with a wrong age fake (the matching-aware "
                                      "discriminator of Reed et al. 2016), so G must show the "
                                      "asked age")
    adversarial_weight: float = _setting(0.1, "weight of D's term in G's stage-3 loss, next "
                                         f"to identity (with {setting('finetune_generator')})")
    mixed_precision: bool = _setting(False, "compute in bfloat16 with float32 weights (for "
                                     "GPUs; off on a CPU)")

    # --- the face recogniser stage (fr): distillation from dlib, triplets on identities ---
    fr_teacher: str | None = _setting(None, "stage fr: a dlib_descriptors.npz with the "
                                      "teacher's descriptors (default: the one beside the "
                                      "faces)")
    fr_freeze_backbone: bool | None = _setting(None, "stage fr: freeze the FR backbone "
                                               "(default: frozen with pretrained weights, "
                                               "trained with a random backbone)")
    fr_train_backbone_layers: int = _setting(0, "stage fr: with a frozen backbone, train its "
                                             "last N layers too")
    fr_distill_weight: float = _setting(1.0, "stage fr: weight of the cosine to the centred "
                                        "teacher descriptor")
    fr_relation_weight: float = _setting(1.0, "stage fr: weight of the relational term "
                                         "(the batch's pairwise distances)")
    fr_identity_weight: float = _setting(1.0, "stage fr: weight of the batch-hard triplet "
                                         "term, where the data has identities")
    fr_margin: float = _setting(0.2, "stage fr: triplet margin (Hermans et al. 2017)")
    fr_flip: bool = _setting(True, "stage fr: mirror half the faces of each batch")
    fr_eval_faces: int = _setting(500, "stage fr: held-out faces its agreement with the "
                                  "teacher is measured on")
    fr_pairs: str | None = _setting(None, "stage fr: a CACD-VS pairs.csv to verify people "
                                    "with the trained FR")
    fr_pairs_limit: int | None = _setting(200, f"stage fr: pairs of {setting('fr_pairs')} checked")
    fr_measure_initial: bool = _setting(True, "stage fr: measure the agreement before "
                                        "training too")
    fr_recalibrate_batches: int = _setting(20, "stage fr: training batches whose mean "
                                           "BatchNorm statistics replace the moving averages "
                                           "at the end (0: keep them)")

    # --- the image-to-image aging network (stages age and aging; beyond the paper) ---
    lr_age: float = _setting(1e-3, "stage age: Adam learning rate of the age estimator (the "
                             "Keras default)")
    age_years_weight: float = _setting(0.5, "stage age: weight of the years head's Huber loss "
                                       "(in decades) beside the categories' cross-entropy")
    lr_aging: float = _setting(2e-4, "stage aging: Adam learning rate of the aging network and "
                               "its discriminator (beta_1 0.5, as for the GAN)")
    aging_adversarial_weight: float = _setting(1.0, "stage aging: weight of the conditional "
                                               "patch discriminator's term (LSGAN)")
    aging_age_weight: float = _setting(0.3, "stage aging: weight of the frozen age estimator's "
                                       "cross-entropy on the (blurred) aged face")
    aging_reconstruction_weight: float = _setting(10.0, "stage aging: weight of the L1 change "
                                                  "asked for the face's own age (none wanted)")
    aging_cycle_weight: float = _setting(0.0, "stage aging: weight of the L1 cycle back from "
                                         "the target age to the own age (a second pass of "
                                         "the network: ~40% slower; 0 skips it)")
    aging_change_weight: float = _setting(10.0, "stage aging: weight of the change's mean "
                                          "square (its size)")
    aging_smoothness_weight: float = _setting(0.3, "stage aging: weight of the change's total "
                                              "variation (no stripes or grids)")
    aging_tint_weight: float = _setting(5.0, "stage aging: weight of the change's mean colour "
                                        "apart from brightness (no tint over the face)")
    aging_warmup_steps: int = _setting(100, "stage aging: steps over which the aging "
                                       "network's loss grows from 0 to its full weight, while "
                                       "the discriminator learns the ages first (0: none)")
    aging_pair_weight: float = _setting(1.0, "stage aging: weight of the pseudo-pair term, the "
                                        "distance band by band to the same face aged by the "
                                        "age prototypes (RUN/prototypes.npz, built first "
                                        "when missing; 0: no teacher)")
    aging_pair_faces: int = _setting(2000, "stage aging: training faces aged by the "
                                     "prototypes to every category for the pseudo-pair term "
                                     "(once, ~0.1 s a face, kept in RUN/stageaging/pairs.npz)")
    aging_pair_shape: float = _setting(0.0, "stage aging: the prototypes' shape strength in the "
                                       "pairs (1: the prototype method's warp, which a network "
                                       "that adds a change to the photo can only blur; 0: the "
                                       "pairs keep the face's shape and age its skin, folds, "
                                       "light and colour)")
    aging_pair_pool: int = _setting(1, "stage aging: the pair term compares the bands after "
                                    "averaging this many pixels square (2: a blur pool, so "
                                    "that no fold has to sit on its exact pixel; 1: every "
                                    "pixel, the sharper faces)")
    aging_figure_faces: int = _setting(30, "stage aging: validation faces aged at each sample "
                                       "step for TensorBoard's figures: same person (dlib), in "
                                       "the target category (the age judge) and the two-sample "
                                       "test, beside the prototypes' (0: none)")
    aging_size: int | None = _setting(None, "stage aging: side in pixels the aging network "
                                      "trains at, on the faces of --prototype-data (default: "
                                      "image_size, on the run's faces)")

    # --- observation ---
    log_every: int = _setting(50, "steps per TensorBoard scalar window (means over it)")
    sample_every: int = _setting(500, "steps between sample grids (and always at the end)")
    checkpoint_every: int = _setting(1000, "steps between checkpoints (and always at the end)")
    grid_rows: int = _setting(8, "fixed latent rows (stage 1) / faces (stages 2-3) in the "
                              "sample grids")
    resume: bool = _setting(False, "continue each stage from its checkpoint")
    overwrite: bool = _setting(False, "start a stage again although it has a checkpoint")
    progress: bool = _setting(True, "a progress bar and the data summary")
    data_cache: str | None = _setting(None, "folder for decoded faces (default "
                                      "~/.cache/age_cgan)")
    prototype_data: str | None = _setting(
        None, "the UTKFace-named face folder at 128 px (prepare --size 128) the age "
        "prototypes are built from, into RUN/prototypes.npz, and stage aging trains on with "
        "--aging-size (default: --data)")

    def __post_init__(self):
        if self.stage not in STAGE_CHOICES:
            raise SettingError(f"{setting('stage')} must be one of {', '.join(STAGE_CHOICES)}, "
                               f"got {self.stage!r}")
        if self.arch not in ("tutorial", "lite"):
            raise SettingError(f"{setting('arch')} must be tutorial or lite, got {self.arch!r}")
        self._check_ranges()
        self._check_devices()
        if self.image_size % 16:
            raise SettingError(f"{setting('image_size')} must be a multiple of 16 (four "
                               "stride-2 blocks)")
        if self.aging_size is not None and (self.aging_size < 16 or self.aging_size % 8):
            raise SettingError(f"{setting('aging_size')} must be a multiple of 8 from 16 (three "
                               f"stride-2 blocks), got {self.aging_size}")

    def _check_ranges(self):
        """Every count at least 1, every rate above 0: a 0 would fail hours later (a modulo
        by checkpoint_every after the first step) or train nothing."""
        for name in ("batch_size", "steps", "image_size", "z_dim", "log_every", "sample_every",
                     "checkpoint_every", "grid_rows", "stage2_pairs", "fr_input_size",
                     "fr_pairs_limit", "aging_pair_faces", "aging_pair_pool"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SettingError(f"{setting(name)} must be at least 1, got {value}")
        for name in ("lr_gan", "lr_encoder", "lr_identity", "lr_fr", "lr_age", "lr_aging",
                     "epochs"):
            value = getattr(self, name)
            if value is not None and not 0 < value < math.inf:
                raise SettingError(f"{setting(name)} must be above 0, got {value}")
        for name in ("mismatch_weight", "adversarial_weight", "fr_distill_weight",
                     "fr_relation_weight", "fr_identity_weight", "fr_margin",
                     "fr_train_backbone_layers", "fr_eval_faces", "fr_recalibrate_batches",
                     "age_years_weight", "aging_warmup_steps", "aging_figure_faces",
                     "aging_pair_shape",
                     *AGING_WEIGHTS):
            value = getattr(self, name)
            if not 0 <= value < math.inf:
                raise SettingError(f"{setting(name)} must be at least 0, got {value}")
        if not 0 <= self.test_fraction < 1:
            raise SettingError(f"{setting('test_fraction')} must be in [0, 1), got "
                               f"{self.test_fraction}")

    def _check_devices(self):
        """"all" or a positive count that divides the (global) batch: the same faces per
        device every step. "all" is checked where the devices are known (backend.devices)."""
        if isinstance(self.devices, str) and self.devices.strip().lower() == "all":
            return
        try:
            count = int(self.devices)
        except (TypeError, ValueError):
            count = 0
        if count < 1 or isinstance(self.devices, bool):
            raise SettingError(f"{setting('devices')} must be a positive number or 'all', got "
                               f"{self.devices!r}")
        if self.batch_size % count:
            raise SettingError(f"{setting('batch_size')} {self.batch_size} does not divide "
                               f"over {count} devices: use a multiple of {count}")

    @classmethod
    def from_stored(cls, values: dict, **changes) -> "TrainConfig":
        """A run folder's config.json (checked by ``check_stored``) back as a TrainConfig;
        keys that are not settings (backend, device_count, ...) are left out."""
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, **changes})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def total_steps(self, stage: str, train_size: int | None) -> int:
        """The stage's length in steps from --steps, --epochs or the stage default."""
        if self.steps is not None:
            return self.steps
        if stage == "2":  # no data: synthetic pairs
            return math.ceil(self.stage2_pairs / self.batch_size)
        default_epochs = {"1": 100, "3": 5, "fr": 10, "age": 10, "aging": 5}[stage]
        epochs = self.epochs if self.epochs is not None else default_epochs
        return max(1, math.ceil(epochs * train_size / self.batch_size))


#: The keys a run folder's config.json fixes for the networks; later stages must agree.
NETWORK_KEYS = ("arch", "image_size", "z_dim", "age_bins", "fr_input_size")


def _allowed(hint) -> tuple[type, ...] | None:
    """The JSON types a field with type ``hint`` accepts (int for float), or None: unchecked."""
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    allowed = []
    for kind in kinds:
        if kind not in (str, int, float, bool, type(None)):
            return None
        allowed += [int, float] if kind is float else [kind]
    return tuple(allowed)


def check_stored(values: dict) -> None:
    """Check a run folder's stored settings: each known key of the right JSON type and range.

    Raises ValueError naming the key ("image_size must be an integer, not '64'"); unknown keys
    (e.g. "backend") pass. The caller adds the file's name.
    """
    hints = typing.get_type_hints(TrainConfig)
    known = {}
    for key, value in values.items():
        allowed = _allowed(hints[key]) if key in hints else None
        if allowed is None:
            continue
        if isinstance(value, bool) and bool not in allowed or not isinstance(value, allowed):
            names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
                     type(None): "null"}
            wanted = " or ".join(names[kind] for kind in allowed
                                   if not (kind is int and float in allowed))
            raise ValueError(f"{key} must be {wanted}, not {json.dumps(value)}")
        known[key] = value
    try:
        TrainConfig(**known)
        AgeBins.parse(known.get("age_bins", DEFAULT_SPEC))
    except ValueError as error:  # worded with the file's keys, not flags
        raise ValueError(f"invalid setting: {error}") from error
