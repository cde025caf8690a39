"""``python train.py``: train the Age-cGAN stages in a run folder (thin over age_cgan.training)."""

from __future__ import annotations

import argparse
import sys

from age_cgan.config import TrainConfig

DEFAULTS = TrainConfig()


def _devices(text: str):
    """--devices: "all" or a positive count (an int, so config.json records a number)."""
    if text.strip().lower() == "all":
        return "all"
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number or all, got {text!r}")
    return int(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py",
        description="Train Age-cGAN: 1 = conditional GAN, 2 = encoder (initial latent "
        "approximation), 3 = identity-preserving encoder fine-tuning, all = 1, 2, 3 in order, "
        "fr = the face recogniser stage 3 uses (train it before stage 3). "
        "The backend is KERAS_BACKEND (tensorflow by default, or jax). Watch it with "
        "`tensorboard --logdir logs`.",
    )
    p.add_argument("--stage", default="1", choices=["1", "2", "3", "all", "fr"],
                   help="what to train (default: 1); fr distils the face recogniser from dlib's "
                   "descriptors (dlib_descriptors.npz beside the faces), which stage 3 and "
                   "infer.py then use")
    p.add_argument("--recipe", choices=["lite"],
                   help="train a whole model by a fixed recipe instead of one --stage: lite = "
                   "the shipped CPU model (--arch lite; stages 1, 2, fr, 3; ~86 min on 2 CPU "
                   "cores). With --dry-run it prints the plan and the expected time; cut off, "
                   "continue it with the same command and --resume")
    p.add_argument("--data", help="UTKFace folder, wiki.mat / imdb.mat, or a CSV of path,age "
                   "(stages 1 and 3; later stages reuse the run's)")
    p.add_argument("--run", default=DEFAULTS.run, help="run folder for config, TensorBoard "
                   f"events, checkpoints, samples and models (default: {DEFAULTS.run})")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="total steps of each stage (overrides the "
                        "epoch defaults below)")
    length.add_argument("--epochs", type=float, help="epochs over the training faces "
                        "(default: 100 for stage 1 as in the paper, 5 for stage 3, 10 for fr; "
                        "stage 2 draws 100k synthetic pairs as in the paper)")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size,
                   help=f"faces per step (default: {DEFAULTS.batch_size}, the book's)")
    p.add_argument("--devices", default=DEFAULTS.devices, type=_devices,
                   help="data parallel over N local devices, or all (default: every local GPU/"
                   "TPU; one device on a CPU). --batch-size is the global batch and must divide "
                   "by the device count. JAX: keras.distribution.DataParallel (several hosts: "
                   "set KERAS_DISTRIBUTION_* as in the README); TensorFlow: MirroredStrategy")
    p.add_argument("--arch", default=DEFAULTS.arch, choices=["tutorial", "lite"],
                   help="network sizes: tutorial = the book's (default), lite = sized for a "
                   "CPU (a run keeps the architecture of its first stage)")
    p.add_argument("--mismatch-weight", type=float, default=DEFAULTS.mismatch_weight,
                   help="stage 1: weight of D's term that calls a real face with a wrong age "
                   f"fake, which makes G show the asked age (default: {DEFAULTS.mismatch_weight})")
    p.add_argument("--age-bins", default=DEFAULTS.age_bins,
                   help="age categories, e.g. '20-30,40-50' (default: the paper's six)")
    p.add_argument("--image-size", type=int, default=DEFAULTS.image_size,
                   help=f"face size in pixels, a multiple of 16 (default: {DEFAULTS.image_size})")
    p.add_argument("--z-dim", type=int, default=DEFAULTS.z_dim,
                   help=f"latent size (default: {DEFAULTS.z_dim}, the paper's)")
    p.add_argument("--fr-weights", default=None,
                   help="FR backbone weights: imagenet | none | PATH to a local "
                   "InceptionResNetV2 no-top weights file. Stage 3 default: the run's trained "
                   "FR (--stage fr) if present, else imagenet; --stage fr default: none (a "
                   "random backbone, trained end to end)")
    p.add_argument("--fr-input-size", type=int, default=DEFAULTS.fr_input_size,
                   help="size the face is resized to inside FR, at least 75 "
                   f"(default: {DEFAULTS.fr_input_size})")
    p.add_argument("--finetune-generator", action="store_true",
                   help="stage 3 also trains G (keeping D's adversarial term)")
    p.add_argument("--resume", action="store_true", help="continue each stage from its checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="start a stage again although it has a checkpoint")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed,
                   help="seeds initialisation, batches, latents and the split (default: 0)")
    p.add_argument("--mixed-precision", action="store_true",
                   help="compute in bfloat16 with float32 weights (for GPUs)")
    p.add_argument("--log-every", type=int, default=DEFAULTS.log_every,
                   help=f"steps per TensorBoard scalar window (default: {DEFAULTS.log_every})")
    p.add_argument("--sample-every", type=int, default=DEFAULTS.sample_every,
                   help=f"steps between sample grids (default: {DEFAULTS.sample_every})")
    p.add_argument("--checkpoint-every", type=int, default=DEFAULTS.checkpoint_every,
                   help=f"steps between checkpoints (default: {DEFAULTS.checkpoint_every})")
    p.add_argument("--data-cache", help="folder for decoded faces (default ~/.cache/age_cgan)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar or data summary")
    p.add_argument("--dry-run", action="store_true",
                   help="check the run folder and the data, print each stage's steps, images "
                   "and epochs, and stop: nothing is trained or written to the run folder")
    return p


def config_from_args(args) -> TrainConfig:
    values = vars(args)
    return TrainConfig(**{k: values[k] for k in TrainConfig.__dataclass_fields__ if k in values})


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as error:
        parser().error(str(error))
    from age_cgan.data import NoFacesError
    from age_cgan.networks import WeightsUnavailable
    from age_cgan.runs import RunFolderError
    from age_cgan.training.loop import (NonFiniteLoss, TrainingInterrupted, format_plan,
                                       plan, train)

    try:
        if args.recipe:
            from age_cgan.training.recipe import format_recipe_plan, run_recipe

            if args.dry_run:
                print(format_recipe_plan(args.recipe, config))
            else:
                record = run_recipe(args.recipe, config)
                print(f"recipe {args.recipe} done in {record['total_wall_seconds'] / 60:.1f} "
                      f"minutes (wall time per stage in {config.run}/recipe.json)")
        elif args.dry_run:
            print(format_plan(config, plan(config)))
        else:
            train(config)
    except (RunFolderError, NonFiniteLoss, NoFacesError, WeightsUnavailable, FileNotFoundError,
            ValueError) as error:
        print(f"train.py: error: {error}", file=sys.stderr)
        return 1
    except TrainingInterrupted as stop:
        print(f"train.py: {stop}; continue with the same command and --resume",
              file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("train.py: interrupted; continue with --resume (the last checkpoint is kept)",
              file=sys.stderr)
        return 130
    return 0


def console() -> None:
    """The console script and the top-level script: backend log noise filtered unless
    --verbose (see age_cgan/cli/quiet.py)."""
    from age_cgan.cli.quiet import run

    run(main)


if __name__ == "__main__":
    console()
