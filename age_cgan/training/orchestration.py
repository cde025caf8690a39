"""Orchestration: what a ``train.py`` command trains, in which order, and from where.

``train(config)`` resolves the config against the run folder (a run keeps its network
settings), checks everything before writing anything (stage order and earlier stages' models
from the stage graph, checkpoints by the one resume-or-refuse rule, the data, the batch), then
runs each stage with ``run_stage``: the same for every ``Stage``, the face recogniser's
included. ``plan(config)`` is the dry run of the same checks. The step loop itself is
``training.loop.fit``.
"""

from __future__ import annotations

import contextlib

import keras

from age_cgan.backend import BACKEND, Step
from age_cgan.backend.devices import device_count, is_chief, placement as device_placement
from age_cgan.backend.memory import describe, out_of_memory
from age_cgan.config import NETWORK_KEYS, TrainConfig, stages_of
from age_cgan.data.sampler import SamplerStateMismatch
from age_cgan.errors import SettingError, python_words, render, setting
from age_cgan.files import WriteFailed
from age_cgan.runs import (RUN_FR, RunFolder, RunFolderError, face_recognizer_weights,
                           holding_run_lock, load_dataset_for_run)
from age_cgan.training.checkpoint import (CheckpointExists, DamagedCheckpoint, SettingsChanged,
                                          checkpoint_state, load_checkpoint, resumption,
                                          save_checkpoint, stored_state)
from age_cgan.training.graph import STAGE_CLASSES, check_ready
from age_cgan.training.loop import OutOfMemory, fit


def resolve_config(config: TrainConfig) -> TrainConfig:
    """Take the network settings a run folder already fixed; refuse conflicting ones."""
    run = RunFolder(config.run)
    if not run.config_path.is_file():
        return config
    stored = run.train_config()
    defaults = TrainConfig()
    changes = {}
    for key in NETWORK_KEYS:
        mine, theirs = getattr(config, key), getattr(stored, key)
        if mine == theirs:
            continue
        if mine != getattr(defaults, key):
            raise RunFolderError(
                f"{run.path} was trained with {key}={theirs!r}; this command asks for {mine!r}. "
                f"Pass {setting(key, theirs)} (or leave it out) to continue it, or use another "
                f"{setting('run')} folder for other network settings."
            )
        changes[key] = theirs
    if config.data is None and stored.data:
        changes["data"] = stored.data
    return config.replace(**changes)


def load_data(config: TrainConfig):
    dataset = load_dataset_for_run(config, progress=config.progress)
    if config.progress:
        print(dataset.summary.format())
    return dataset


def _prepare(config: TrainConfig, configs=None):
    """What ``train`` and ``plan`` check and load first: (the config with the run folder's
    settings, the run folder, the stages in order, the data or None when no stage needs it).

    ``configs``: one config per planned stage (a recipe's, each with its own settings; default:
    ``config`` for each stage ``config.stage`` names). Every planned stage is checked before
    any trains: the networks it needs from an earlier stage, the device split, the batch and
    what it needs of the data (stage fr: dlib's descriptors)."""
    config = resolve_config(config)
    run = RunFolder(config.run)
    configs = ([config.replace(stage=s) for s in stages_of(config.stage)] if configs is None
               else [resolve_config(c) for c in configs])
    stages = tuple(c.stage for c in configs)
    check_ready(run, stages, config)
    for each in configs:  # an uneven split fails before any work
        device_count(each.devices, each.batch_size)
    dataset = None
    if any(STAGE_CLASSES[s].needs_data for s in stages):
        dataset = load_data(config)
        for each in configs:
            if STAGE_CLASSES[each.stage].needs_data:
                _check_batch(each, dataset, (each.stage,))
                STAGE_CLASSES[each.stage].check_data(each, dataset)
    return config, run, stages, dataset


def check_stages(configs: list[TrainConfig], resume_checks: bool = True):
    """Check every stage of ``configs`` (one config per stage, in training order) before any
    trains, as ``train`` checks its own stages: a refusal comes before an hour of stage 1, not
    after it. ``resume_checks``: also each stage's checkpoint (resume or refuse). Returns the
    data (or None)."""
    config, run, _, dataset = _prepare(configs[0], configs)
    if resume_checks:
        for each in configs:
            _resumption(run, each.stage, resolve_config(each), dataset)
    return dataset


def _check_batch(config: TrainConfig, dataset, stages) -> None:
    """A batch must fit in the faces each stage draws from (the sampler draws without
    replacement; the image-to-image stages leave their validation faces out)."""
    for stage in stages:
        rows = STAGE_CLASSES[stage].batch_rows(config, dataset) \
            if STAGE_CLASSES[stage].needs_data else None
        if rows is not None and config.batch_size > rows:
            raise SettingError(
                f"{setting('batch_size', config.batch_size)} is larger than the {rows} "
                f"training faces stage {stage} draws from in {setting('data')} {config.data}: "
                f"pass {setting('batch_size', max(1, rows))} or less, or more data")


def _resumption(run: RunFolder, stage: str, config: TrainConfig, dataset=None):
    """The stage's resume-or-refuse decision. A checkpoint to resume must also have been
    written with this batch size and, when ``dataset`` is given, for as many training faces
    (``SettingsChanged`` names both values and the ways out), so that it continues exactly."""
    path = run.stage_dir(stage) / "checkpoint.npz"
    decision = resumption(path, stage, config.run, config.resume, config.overwrite)
    if decision.step is not None:
        sampler = stored_state(path).get("sampler") or {}
        rows = None if dataset is None else STAGE_CLASSES[stage].sampler_rows(dataset)
        for key, mine in (("batch_size", config.batch_size), ("num_rows", rows)):
            if mine is not None and sampler.get(key, mine) != mine:
                raise SettingsChanged(stage, path, decision.step, key, sampler[key], mine)
    return decision


def train(config: TrainConfig) -> dict:
    """Run ``config.stage`` (or all stages) and return each stage's result (the last scalar
    window's means; stage fr: its summary).

    Everything is checked before the run folder is written (its config, the stage order, the
    checkpoints, the data and the batch size), under the run folder's lock (RunFolder.lock):
    a refused command leaves the folder as it was, and a second trainer is refused.
    """
    # Several hosts: process 0 holds the lock and writes; the others only train.
    with RunFolder(config.run).lock() if is_chief() else contextlib.nullcontext():
        config, run, stages, dataset = _prepare(config)
        for stage in stages:
            _resumption(run, stage, config, dataset)  # refuses before anything is written
        if config.mixed_precision:
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
        stored = run.read_config() if run.config_path.is_file() else {}
        if is_chief():
            run.write_config({**stored, **config.to_dict(), "backend": BACKEND,
                              "device_count": device_count(config.devices)})
        return {stage: run_stage(config, stage, dataset) for stage in stages}


def run_stage(config: TrainConfig, stage_name: str, dataset=None, **build) -> dict:
    """Train one stage to its total steps and return ``stage.finish``'s result. ``build``
    goes to the stage's constructor (e.g. a prebuilt ``model`` for stage fr)."""
    run = RunFolder(config.run)
    devices = device_placement(config.devices, config.batch_size)
    keras.utils.set_random_seed(config.seed)  # network initialisation (and dropout seeds)
    with devices.scope():  # variables replicated on every device (one device: no-op)
        stage = STAGE_CLASSES[stage_name](config, run, dataset, **build)
        step_fn = Step(stage.models, stage.optimizers, stage.updates, placement=devices)
    stage.writes = devices.is_chief
    checkpoint = run.stage_dir(stage_name) / "checkpoint.npz"
    trained = {name: stage.models[name] for name in stage.trained}
    with devices.scope():
        start = _restore(config, stage, step_fn, checkpoint, trained)
    stage.begin(resumed=start > 0)
    total = config.total_steps(stage_name, None if dataset is None else len(dataset.train()))

    saved, steps = [], [start]  # checkpoints this call wrote; the step being prepared

    def save(step):
        if devices.is_chief:
            save_checkpoint(checkpoint, trained, stage.optimizers, step, stage.get_state(),
                            stage.fixed)
            saved.append(step)

    def next_batch():
        steps[0] += 1
        return stage.next_batch()

    try:
        history = fit(
            step_fn, next_batch, name=stage_name, logdir=run.stage_dir(stage_name),
            start=start, total=total, batch_size=config.batch_size, log_every=config.log_every,
            sample_every=config.sample_every, checkpoint_every=config.checkpoint_every,
            progress=config.progress, save=save, samples=stage.samples,
            before_final=stage.before_final,
            config_text=_config_markdown(config) if start == 0 else None,
            write=devices.is_chief,
        )
        for name in stage.trained if devices.is_chief else ():
            run.save_model(stage.models[name], name)
        return stage.finish(history)
    except WriteFailed as failure:  # a full disk, ...: stop as SIGTERM does, say what is kept
        raise failure.but(*_kept(config, stage_name, checkpoint, saved, failure.path)) \
            from failure
    except Exception as error:
        cause = out_of_memory(error)
        if cause is None:
            raise
        raise _out_of_memory(config, stage_name, checkpoint, steps[0], cause) from error


def _kept(config: TrainConfig, stage_name: str, checkpoint, saved: list,
          failed) -> tuple[str, str]:
    """(what of the stage is intact, what to run next) once the write of ``failed`` failed."""
    step, _ = checkpoint_state(checkpoint)
    if step is None:
        return f"no checkpoint of stage {stage_name} was written yet", "run the same command again"
    where = "" if failed == checkpoint else f" ({checkpoint})"
    if saved or config.resume:
        return (f"the checkpoint of step {step}{where} is intact",
                f"resume with {setting('resume', True)}")
    return (f"the earlier checkpoint of step {step}{where} is unchanged",
            "run the same command again")


def _out_of_memory(config: TrainConfig, stage_name: str, checkpoint, step: int,
                   cause: BaseException) -> OutOfMemory:
    """The one line for a batch too big for the memory: the batch size, a smaller one (a
    multiple of the device count), and the checkpoint that is kept."""
    size, devices = config.batch_size, device_count(config.devices)
    smaller = size // 2 // devices * devices
    stored, _ = checkpoint_state(checkpoint)
    message = (f"stage {stage_name} ran out of memory at step {step} with "
               f"{setting('batch_size', size)} ({describe(cause)}). ")
    free = "free memory by closing other programs"
    if not smaller:
        message += (f"A batch of {size} is the smallest here: {free}, or train a new "
                    f"{setting('run')} with a smaller {setting('image_size')}")
        message += f"; the checkpoint of step {stored} is intact." if stored else "."
    elif stored is None:
        message += (f"No checkpoint of stage {stage_name} was written yet; run the same command "
                    f"with {setting('batch_size', smaller)} (or {free} first).")
    else:
        message += (f"The checkpoint of step {stored} ({checkpoint}) is intact, but it continues "
                    f"only with {setting('batch_size', size)}: {free} and resume with "
                    f"{setting('resume', True)}, or start the stage again with "
                    f"{setting('batch_size', smaller)} {setting('overwrite', True)}.")
    return OutOfMemory(message)


def _restore(config, stage, step_fn, checkpoint, trained) -> int:
    """The step the stage starts after: its checkpoint's when resumed, else 0."""
    decision = _resumption(stage.run, stage.name, config, stage.dataset)
    if decision.step is None:
        if config.progress and decision.note:
            print(f"stage {stage.name} {render(decision.note, lambda part: 'as asked')}")
        elif config.progress and config.resume:
            print(f"no checkpoint at {checkpoint}: stage {stage.name} starts at step 0")
        return 0
    step, state, arrays = load_checkpoint(checkpoint, trained, stage.optimizers)
    try:
        stage.set_state(state)
    except SamplerStateMismatch as mismatch:  # other training faces (or batch) than it had
        raise SettingsChanged(stage.name, checkpoint, step, mismatch.key, mismatch.stored,
                              mismatch.mine) from None
    stage.fixed = {key: arrays[key] for key in stage.fixed}
    step_fn.reset()
    if config.progress:
        print(f"resumed stage {stage.name} from {checkpoint} at step {step}")
    return step


def plan(config: TrainConfig) -> list[dict]:
    """What ``train(config)`` would do, without training or writing to the run folder.

    Checks what ``train`` checks first (the run folder's network settings, earlier stages'
    models, the data) and returns one row per stage: its steps, where it would start, the
    images and epochs that means, and what stops it (a checkpoint without resume or
    overwrite). The data is decoded (and cached) as for training, so a bad path fails here.
    Notes may name settings (``age_cgan.errors``): ``format_plan`` words them.
    """
    config, run, stages, dataset = _prepare(config)
    train_size = None if dataset is None else len(dataset.train())
    rows = []
    holder = run.holder()
    for name in stages:
        total = config.total_steps(name, train_size)
        try:
            decision = _resumption(run, name, config, dataset)
            start, note = min(decision.step or 0, total), decision.note
            if decision.step is not None:
                note = ""
        except DamagedCheckpoint as damage:
            start, note = 0, f"refused: {damage.message}"
        except CheckpointExists as exists:
            start, note = 0, (f"refused: a checkpoint at step {exists.step} exists; pass "
                              f"{setting('resume', True)} or {setting('overwrite', True)}")
        except SettingsChanged as changed:
            start, note = 0, f"refused: {changed.message}"
        if name == "3":
            note = "; ".join(filter(None, [note, "FR: " + _fr_source(run, config)]))
        if holder is not None:
            note = "; ".join(filter(None, [f"refused now: process {holder} is training in "
                                           "this run folder", note]))
        images = (total - start) * config.batch_size
        epochs = None if not STAGE_CLASSES[name].needs_data or not train_size \
            else images / train_size
        rows.append({"stage": name, "start": start, "total": total,
                     "batch_size": config.batch_size, "images": images, "epochs": epochs,
                     "note": note})
    return rows


def _fr_source(run, config) -> str:
    weights = face_recognizer_weights(run, config.fr_weights, default="imagenet")
    if weights == RUN_FR:
        return f"the run's trained {run.model_path('face_recognizer')}"
    if weights == "imagenet":
        return "InceptionResNetV2 with ImageNet weights (a download; untrained head)"
    if weights == "none":
        return "a random InceptionResNetV2 (smoke tests only)"
    return f"InceptionResNetV2 with the weights in {weights}"


def format_plan(config: TrainConfig, rows: list[dict], word=python_words,
                headline: bool = True) -> str:
    """The plan as a table; ``word`` words the settings its notes name (the command line
    passes its flags'); ``headline`` puts what a dry run is above it (``dry_run_line``)."""
    lines = [dry_run_line(config)] if headline else []
    lines.append("stage  steps               batch  images       epochs  notes")
    for row in rows:
        steps = f"{row['start'] + 1}-{row['total']}" if row["start"] < row["total"] else "done"
        epochs = "-" if row["epochs"] is None else f"{row['epochs']:.2f}"
        lines.append(f"{row['stage']:<6} {steps:<19} {row['batch_size']:<6} "
                     f"{row['images']:<12,} {epochs:<7} {render(row['note'], word)}")
    return "\n".join(lines)


def dry_run_line(config: TrainConfig) -> str:
    return f"dry run of {config.run} on the {BACKEND} backend: nothing was trained or written"


#: ``train_face_recognizer``'s keywords that are spelled otherwise in TrainConfig.
FR_KEYWORDS = {"learning_rate": "lr_fr", "input_size": "fr_input_size", "weights": "fr_weights",
               "teacher_file": "fr_teacher", "pairs": "fr_pairs"}


@holding_run_lock  # its caller may hold it already: the lock nests
def train_face_recognizer(run_dir, dataset=None, *, model=None, **settings) -> dict:
    """Train stage fr in ``run_dir`` (as ``train.py --stage fr`` does) and return its summary.

    ``settings`` are TrainConfig fields, with the ``fr_`` prefix optional (``margin`` =
    ``fr_margin``) and ``learning_rate``, ``input_size``, ``weights``, ``teacher_file`` and
    ``pairs`` for ``lr_fr``, ``fr_input_size``, ``fr_weights``, ``fr_teacher``, ``fr_pairs``;
    the rest come from the run's config.json when it has one. ``dataset``: a ``FaceDataset``
    (default: the run's data, split as training did). ``model``: a prebuilt image ->
    unit-embedding model (tests).
    """
    run = RunFolder(run_dir)
    fields = TrainConfig.__dataclass_fields__
    named = {FR_KEYWORDS.get(k, k if k in fields else f"fr_{k}"): v for k, v in settings.items()}
    base = run.train_config() if run.config_path.is_file() else TrainConfig()
    config = base.replace(run=str(run_dir), stage="fr", **named)
    if dataset is None:
        dataset = load_data(config)
    _resumption(run, "fr", config)  # refuses before anything is written
    return run_stage(config, "fr", dataset, model=model)


def _config_markdown(config: TrainConfig) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in config.to_dict().items())
    return f"| setting | value |\n|---|---|\n{rows}"


__all__ = ["check_stages", "format_plan", "load_data", "plan", "resolve_config", "run_stage", "train",
           "train_face_recognizer"]
