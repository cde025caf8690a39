"""Recipes: a whole model trained by one command, stage by stage, resumable.

``lite`` is the model shipped in ``age_cgan/pretrained/``: the CPU-sized networks
(``networks.ARCHITECTURES["lite"]``) trained on a 2-core CPU: Age-cGAN's 1, 2, fr, 3 and the age estimator on UTKFace at 64 px, then the age prototypes and the aging
network at 128 px, taught by them, on ``prototype_data`` (budget: 150 minutes of wall time).
Each stage runs as ``train.py --stage N`` would, with the steps and settings below; ``resume=True`` continues a stage from its checkpoint and passes over a
finished one, so a recipe cut off at any point is continued by the same command with
``--resume``. Wall time per stage and in all goes to ``RUN/recipe.json``.
"""

from __future__ import annotations

import dataclasses
import json
import time

from age_cgan.config import TrainConfig
from age_cgan.errors import SettingError, python_words, setting
from age_cgan.runs import RunFolder, write_json_atomic
from age_cgan.training.graph import missing_models
from age_cgan.training.orchestration import (check_stages, dry_run_line, format_plan, plan,
                                             resolve_config, train)
from age_cgan.training.teacher import prototype_source

#: Seconds per step of each lite stage at batch 64 (wall time, start-up and saving included),
#: from the recipe.json of the shipped model's run on the 2-core development CPU with
#: TensorFlow (the faster backend there), which shared the CPU with other work at times; the
#: dry run's time estimate comes from these.
LITE_SECONDS_PER_STEP = {"1": 0.327, "2": 0.128, "fr": 0.36, "3": 0.42, "age": 0.49,
                         "aging": 0.97}  # aging: at 128 px, batch 16, with its pairs and figures

RECIPES = {
    "lite": {
        "common": {"arch": "lite", "batch_size": 64, "mismatch_weight": 1.0,
                   "checkpoint_every": 500, "sample_every": 500, "log_every": 50},
        # (stage, its own settings); stage 1: 32 epochs of UTKFace's 19,946 training faces.
        "stages": [("1", {"steps": 10000}),
                   ("2", {"steps": 3000}),  # 192k fresh (z, y) pairs (paper: 100k)
                   ("fr", {"steps": 3000}),  # ~9.5 epochs of dlib distillation
                   ("3", {"steps": 1000}),  # ~3 epochs of identity fine-tuning
                   # the image-to-image aging network and its age estimator (the default)
                   ("age", {"steps": 2500}),  # ~8.4 epochs, augmented
                   # at 128 px on --prototype-data's faces, taught by the age prototypes
                   # (built first, into RUN/prototypes.npz): 3,000 faces aged to every
                   # category without the prototypes' warp (taught it, the network blurred
                   # what moves), ~8 pairs a face. The pseudo-pair term leads and says the age
                   # (at the own age its target is the photo: no reconstruction term, whose
                   # L1 kept every change near 0);
                   # the estimator's term is off (it taught the 64 px network to paint what
                   # it reads as age), the spectrally normalised patch discriminator weighs
                   # 0.05 (FRAN's adversarial weight)
                   ("aging", {"steps": 1500, "batch_size": 16, "aging_size": 128,
                              "aging_pair_faces": 3000, "aging_warmup_steps": 0,
                              "aging_adversarial_weight": 0.05, "aging_age_weight": 0.0,
                              "aging_reconstruction_weight": 0.0,
                              "aging_change_weight": 0.0, "aging_smoothness_weight": 0.0,
                              "aging_tint_weight": 1.0})],
        "seconds_per_step": LITE_SECONDS_PER_STEP,
    },
}


def stage_configs(name: str, base: TrainConfig, only=None) -> list[TrainConfig]:
    """The config of each stage of recipe ``name``, from ``base`` (run, data, resume, ...);
    ``only``: just these stages of it (``train.py --recipe lite --stage network``)."""
    recipe = RECIPES[name]
    common = base.replace(**recipe["common"])
    configs = [common.replace(stage=stage, **settings) for stage, settings in recipe["stages"]
               if only is None or stage in only]
    if not configs:
        raise SettingError(f"recipe {name} has no stage {', '.join(only)}; its stages are "
                           + ", ".join(stage for stage, _ in recipe["stages"]))
    return configs


def expected_seconds(name: str, configs) -> dict:
    """Stage -> expected seconds on the development CPU (from the measured seconds per step)."""
    per_step = RECIPES[name]["seconds_per_step"]
    return {c.stage: c.steps * per_step[c.stage] for c in configs}


def format_recipe_plan(name: str, base: TrainConfig, word=python_words, only=None) -> str:
    """The dry run: each stage's plan (as ``train.py --dry-run`` prints it) and expected time,
    after the checks ``run_recipe`` makes before any stage trains (raised as they would be);
    ``word`` words the settings the notes name (``orchestration.format_plan``)."""
    configs = stage_configs(name, base, only)
    check_stages(configs, resume_checks=False)  # checkpoints: in each stage's notes
    expected = expected_seconds(name, configs)
    lines = [f"recipe {name}: {len(configs)} stages in {base.run}; expected "
             f"{sum(expected.values()) / 60:.0f} minutes on a 2-core CPU (TensorFlow)"]
    if _builds_prototypes(name, configs):
        check_prototype_step(base)
        lines.append(f"before stage aging, the age prototypes from {_prototype_source(base)} "
                     f"into {base.run}/prototypes.npz (~2 minutes): the aging network's "
                     "teacher and the default method")
    for config in configs:
        settings = {k: v for k, v in dataclasses.asdict(config).items()
                    if v != getattr(TrainConfig(), k) and k not in ("run", "data", "stage")}
        lines.append(f"\nstage {config.stage}: ~{expected[config.stage] / 60:.0f} min; "
                     + ", ".join(f"{k}={v}" for k, v in sorted(settings.items())))
        if not missing_models(RunFolder(config.run), config.stage, config):
            # (a later stage needs the models an earlier one writes: nothing to plan yet)
            lines.append(format_plan(config, plan(config), word, headline=False))
    return "\n".join([*lines, "", dry_run_line(base)])


def run_recipe(name: str, base: TrainConfig, only=None) -> dict:
    """Train every stage of recipe ``name`` (``only``: these of them) in order, once all of
    them are checked (``check_stages``); returns the wall-time record."""
    with RunFolder(base.run).lock():  # one writer for the whole recipe, between stages too
        configs = stage_configs(name, base, only)
        check_stages(configs)
        if _builds_prototypes(name, configs):
            check_prototype_step(base)
        return _run_stages(name, base, configs)


def _run_stages(name: str, base: TrainConfig, configs) -> dict:
    run = RunFolder(base.run)
    record_path = run.path / "recipe.json"
    record = json.loads(record_path.read_text()) if base.resume and record_path.is_file() else {}
    record.update(recipe=name, stages=record.get("stages", {}))
    prototypes = _builds_prototypes(name, configs)

    def timed(stage_name, work, steps=None):
        started = time.time()
        done = work()
        if done is False:  # passed over: nothing to time
            return
        stage = record["stages"].setdefault(stage_name, {"wall_seconds": 0.0})
        stage["wall_seconds"] += time.time() - started  # a resumed stage adds its calls' times
        if steps is not None:
            stage["steps"] = steps
        record["total_wall_seconds"] = sum(s["wall_seconds"] for s in record["stages"].values())
        write_json_atomic(record_path, record, "the recipe's wall-time record")

    for config in configs:
        if prototypes and config.stage == "aging":  # the aging network's teacher, first
            timed("prototypes", lambda: build_prototypes_step(base, run))
        timed(config.stage, lambda: train(config), config.steps)
    if prototypes:
        set_default_method(run)
    return record


def _builds_prototypes(name: str, configs) -> bool:
    """The whole lite recipe ends by building the age prototypes (a part of it does not)."""
    return name == "lite" and len(configs) == len(RECIPES[name]["stages"])


def _prototype_source(base: TrainConfig) -> str | None:
    """The prototypes' faces (``teacher.prototype_source``), the run's data filling in."""
    return prototype_source(resolve_config(base))


def check_prototype_step(base: TrainConfig) -> None:
    """Before any stage trains (and in the dry run): the prototypes' faces exist, are 128 px
    and enough in every category, and dlib's landmark model is installed (a refusal names what
    to do)."""
    from pathlib import Path

    from age_cgan.prototypes.build import check_prototype_faces
    from age_cgan.prototypes.landmarks import available

    source = _prototype_source(base)
    if not source or not Path(source).expanduser().exists():
        raise SettingError(f"the age prototypes are built from {setting('prototype_data')} "
                           f"(else {setting('data')}), and {source!r} does not exist: make it "
                           "with python -m age_cgan.data prepare UTKFACE_DIR DIR --size 128")
    if not available():
        raise SettingError("the recipe builds the age prototypes with dlib's landmark model: "
                           'pip install "age-cgan[eval]" first')
    config = resolve_config(base)
    check_prototype_faces(source, age_bins=config.age_bins, test_fraction=config.test_fraction,
                          seed=config.seed,
                          given_as="prototype_data" if base.prototype_data else "data")


def build_prototypes_step(base: TrainConfig, run: RunFolder) -> bool:
    """The age prototypes of ``prototype_data`` (else ``data``) into RUN/prototypes.npz, before
    stage aging learns from them; passed over when the run has them. Returns whether it built
    them."""
    from age_cgan.training.teacher import run_prototypes

    if (run.path / "prototypes.npz").is_file():
        return False
    run_prototypes(resolve_config(base), run, base.progress)
    return True


def set_default_method(run: RunFolder) -> None:
    """The run's default method and its strengths in config.json, once every stage ran."""
    from age_cgan.aging.prototype import PrototypeStrengths

    config = run.read_config()
    config.update(default_method="prototype", network_strength=config.get(
        "default_strength", 1.0), prototype_strengths=dataclasses.asdict(PrototypeStrengths()))
    write_json_atomic(run.config_path, config, "the run's settings")
