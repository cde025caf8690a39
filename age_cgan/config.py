"""One frozen config per training invocation, written into the run folder.

Every default is the book's or the paper's value unless its comment says why it departs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing

from age_cgan.ages import DEFAULT_SPEC, AgeBins

STAGES = ("1", "2", "3")  # what --stage all runs; "fr" trains the face recogniser on its own


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    run: str = "logs/run"  # the run folder: config, events, checkpoints, samples, models
    data: str | None = None  # UTKFace folder, wiki.mat / imdb.mat, or a CSV of path,age
    stage: str = "1"  # "1", "2", "3", "all" (1, 2, 3) or "fr" (the face recogniser)

    # --- the networks (a run keeps the values of its first stage) ---
    arch: str = "tutorial"  # the book's networks; "lite": CPU-sized (networks.ARCHITECTURES)
    image_size: int = 64  # tutorial
    z_dim: int = 100  # paper / tutorial
    age_bins: str = DEFAULT_SPEC  # paper's six categories
    fr_input_size: int = 160  # FR backbone input; book 192 (3x upsampling), 160 is lighter
    fr_weights: str | None = None  # None: the run's trained FR if present, else "imagenet" (book)

    # --- length and batches ---
    batch_size: int = 128  # book text (its repository uses 2); the global batch over devices
    devices: int | str = "all"  # ours: data parallel over N local devices; "all" = every local
    #   accelerator (one device on a CPU); the batch size must divide by the device count
    steps: int | None = None  # total steps of the stage; overrides epochs
    epochs: float | None = None  # None: 100 for stage 1 (paper), 5 for stage 3, 10 for fr (ours)
    stage2_pairs: int = 100_000  # paper: the encoder sees 100k synthetic (z, y) pairs
    seed: int = 0
    test_fraction: float = 0.1  # paper: 10k of 120k held out (we keep ~10%)

    # --- optimisers ---
    lr_gan: float = 2e-4  # book: Adam(2e-4, beta_1=0.5) for D and G
    beta1_gan: float = 0.5  # book
    lr_encoder: float = 1e-3  # book: encoder compiled with 'adam' = Keras default 1e-3
    lr_identity: float = 2e-4  # book stage 3: Adam(2e-4, beta_1=0.5)
    beta1_identity: float = 0.5  # book stage 3
    lr_fr: float = 1e-3  # FR distillation: Keras Adam default (the book never trains FR)
    finetune_generator: bool = False  # stage 3 also trains G (then D's term keeps G realistic)
    mismatch_weight: float = 0.0  # ours: D also learns real faces with a wrong age as fakes
    #   (the matching-aware discriminator of Reed et al. 2016), so G must show the asked age
    adversarial_weight: float = 0.1  # ours: D's term in G's stage-3 loss, next to identity
    mixed_precision: bool = False  # mixed_bfloat16 (useful on GPUs; off on CPU)

    # --- observation ---
    log_every: int = 50  # steps per TensorBoard scalar window (means over the window)
    sample_every: int = 500  # steps between sample grids (and always at the end)
    checkpoint_every: int = 1000  # steps between checkpoints (and always at the end)
    grid_rows: int = 8  # fixed latent rows (stage 1) / faces (stages 2-3) in sample grids
    resume: bool = False
    overwrite: bool = False  # start a stage again although it has a checkpoint
    progress: bool = True
    data_cache: str | None = None  # where decoded faces are cached (default ~/.cache/age_cgan)

    def __post_init__(self):
        if self.stage not in (*STAGES, "all", "fr"):
            raise ValueError(f"--stage must be 1, 2, 3, all or fr, got {self.stage!r}")
        if self.batch_size < 1:
            raise ValueError("--batch-size must be at least 1")
        if self.steps is not None and self.steps < 1:
            raise ValueError("--steps must be at least 1")
        if self.arch not in ("tutorial", "lite"):
            raise ValueError(f"--arch must be tutorial or lite, got {self.arch!r}")
        if self.mismatch_weight < 0:
            raise ValueError("--mismatch-weight must be at least 0")
        self._check_ranges()
        self._check_devices()
        if self.image_size % 16:
            raise ValueError("--image-size must be a multiple of 16 (four stride-2 blocks)")

    def _check_ranges(self):
        """Every count at least 1, every rate above 0: a 0 would fail hours later (a modulo
        by --checkpoint-every after the first step) or train nothing."""
        for flag in ("image_size", "z_dim", "log_every", "sample_every", "checkpoint_every",
                     "grid_rows", "stage2_pairs", "fr_input_size"):
            if getattr(self, flag) < 1:
                raise ValueError(f"--{flag.replace('_', '-')} must be at least 1, got "
                                 f"{getattr(self, flag)}")
        for flag in ("lr_gan", "lr_encoder", "lr_identity", "lr_fr"):
            if not 0 < getattr(self, flag) < math.inf:
                raise ValueError(f"{flag} must be above 0, got {getattr(self, flag)}")
        if self.epochs is not None and not 0 < self.epochs < math.inf:
            raise ValueError(f"--epochs must be above 0, got {self.epochs}")
        if not 0 <= self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        if not 0 <= self.adversarial_weight < math.inf:
            raise ValueError(f"adversarial_weight must be at least 0, got "
                             f"{self.adversarial_weight}")

    def _check_devices(self):
        """"all" or a positive count that divides the (global) batch: the same faces per
        device every step. "all" is checked where the devices are known (training.devices)."""
        if isinstance(self.devices, str) and self.devices.strip().lower() == "all":
            return
        try:
            count = int(self.devices)
        except (TypeError, ValueError):
            count = 0
        if count < 1 or isinstance(self.devices, bool):
            raise ValueError(f"--devices must be a positive number or 'all', got {self.devices!r}")
        if self.batch_size % count:
            raise ValueError(f"--batch-size {self.batch_size} does not divide over {count} "
                             f"devices: use a multiple of {count}")

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
        default_epochs = {"1": 100, "3": 5, "fr": 10}[stage]
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
    except ValueError as error:
        raise ValueError(f"invalid setting: {error}") from error
