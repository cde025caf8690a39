"""Each stage for a few real steps on tiny data: events, checkpoints, resume, frozen networks."""

import json
import re
from pathlib import Path

import keras
import numpy as np
import pytest

from age_cgan.cli.words import cli_message
from age_cgan.config import TrainConfig
from age_cgan.runs import RunFolder, RunFolderError
from age_cgan.training import stages as stages_module
from age_cgan.backend import Step
from age_cgan.training.checkpoint import checkpoint_step
from age_cgan.training import STAGE_CLASSES, NonFiniteLoss, load_data, train
from conftest import TINY


def config_for(run, data, cache, **changes):
    return TrainConfig(run=str(run), data=str(data), data_cache=str(cache), **{**TINY, **changes})


def losses_by_step(run, stage):
    rows = [json.loads(line) for line in (run / f"stage{stage}" / "metrics.jsonl").open()]
    return {row["step"]: {k: v for k, v in row.items() if "/loss/" in k} for row in rows}


def weights(model):
    return [np.array(v.numpy()) for v in model.variables]


def tensorboard_tags(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    events.Reload()
    return set(events.Tags()["tensors"])  # TF2 summaries (scalars, images, text) are tensors


def test_tensorboard_reads_scalars_grids_and_config(trained_run):
    tags = tensorboard_tags(trained_run / "stage1")
    assert {"stage1/loss/d", "stage1/loss/g", "perf/stage1/images_per_sec",
            "stage1/samples_by_age", "stage1/config"} <= tags
    assert {"stage2/loss/latent", "stage2/loss/zeros_baseline", "stage2/reconstructions"} <= (
        tensorboard_tags(trained_run / "stage2"))
    assert {"stage3/loss/identity", "stage3/reconstructions"} <= tensorboard_tags(trained_run / "stage3")


def test_all_stages_write_events_checkpoints_samples_and_models(trained_run):
    for stage in "123":
        folder = trained_run / f"stage{stage}"
        assert list(folder.glob("events.out.tfevents.*")), f"no TensorBoard events in {folder}"
        assert checkpoint_step(folder / "checkpoint.npz") == 2
        assert list((folder / "samples").glob("*.png"))
        assert set(losses_by_step(trained_run, stage)) == {1, 2}
    for network in ("generator", "discriminator", "encoder"):
        assert RunFolder(trained_run).has_model(network)
    config = json.loads((trained_run / "config.json").read_text())
    assert config["image_size"] == 32 and config["age_bins"].startswith("0-18")


def test_stage1_resume_reproduces_the_uninterrupted_run(tmp_path, tiny_faces):
    straight = config_for(tmp_path / "straight", tiny_faces, tmp_path / "cache", stage="1", steps=4)
    train(straight)
    interrupted = straight.replace(run=str(tmp_path / "resumed"), steps=2)
    train(interrupted)
    with pytest.raises(RunFolderError, match="resume=True") as refused:
        train(interrupted.replace(steps=4))  # never silently starts over a checkpoint
    assert "Pass --resume to continue it" in cli_message(refused.value)  # as train.py says it
    train(interrupted.replace(steps=4, resume=True))
    a, b = losses_by_step(tmp_path / "straight", 1), losses_by_step(tmp_path / "resumed", 1)
    assert sorted(b) == [1, 2, 3, 4]
    for step in (3, 4):
        for key in a[step]:
            assert b[step][key] == pytest.approx(a[step][key], rel=1e-4, abs=1e-5), (step, key)


def test_ctrl_c_checkpoints_the_step_and_resume_continues_exactly(tmp_path, tiny_faces,
                                                                 monkeypatch, capsys):
    import signal

    from age_cgan.cli.train import main

    def args(run):
        return ["--stage", "1", "--data", str(tiny_faces), "--run", str(tmp_path / run),
                "--data-cache", str(tmp_path / "cache"), "--steps", "4", "--batch-size", "4",
                "--image-size", "32", "--log-every", "1", "--sample-every", "2",
                "--checkpoint-every", "100", "--no-progress"]

    assert main(args("straight")) == 0
    original = stages_module.Stage1.next_batch
    calls = {"n": 0}

    def interrupted(self):
        calls["n"] += 1
        if calls["n"] == 2:  # a real SIGINT, as Ctrl-C sends, while step 2 is being prepared
            signal.raise_signal(signal.SIGINT)
        return original(self)

    monkeypatch.setattr(stages_module.Stage1, "next_batch", interrupted)
    assert main(args("stopped")) == 130
    assert "stage 1 stopped after step 2, which is checkpointed" in capsys.readouterr().err
    assert checkpoint_step(tmp_path / "stopped" / "stage1" / "checkpoint.npz") == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    monkeypatch.setattr(stages_module.Stage1, "next_batch", original)
    assert main(args("stopped") + ["--resume"]) == 0
    a, b = losses_by_step(tmp_path / "straight", 1), losses_by_step(tmp_path / "stopped", 1)
    assert sorted(b) == [1, 2, 3, 4]
    for step in (3, 4):
        for key in a[step]:
            assert b[step][key] == pytest.approx(a[step][key], rel=1e-4, abs=1e-5), (step, key)


def test_interrupt_handling_leaves_an_ignored_sigint_ignored():
    """A job started with `&` by a script ignores SIGINT; training must not start hearing it."""
    import signal

    from age_cgan.training.loop import _deferred_interrupts

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with _deferred_interrupts():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_IGN, signal.SIG_DFL)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path, tiny_faces, monkeypatch):
    config = config_for(tmp_path / "run", tiny_faces, tmp_path / "cache", stage="1", steps=6)
    original = stages_module.Stage1.next_batch
    calls = {"n": 0}

    def poisoned(self):
        batch = original(self)
        calls["n"] += 1
        if calls["n"] == 3:
            batch["image"][:] = np.nan
        return batch

    monkeypatch.setattr(stages_module.Stage1, "next_batch", poisoned)
    with pytest.raises(NonFiniteLoss, match=r"stage 1: .* at step 3"):
        train(config)
    checkpoint = tmp_path / "run" / "stage1" / "checkpoint.npz"
    assert checkpoint_step(checkpoint) == 2
    monkeypatch.setattr(stages_module.Stage1, "next_batch", original)
    train(config.replace(resume=True, steps=3))  # the kept checkpoint loads and training goes on
    assert checkpoint_step(checkpoint) == 3


def _stage(config, name, run, dataset=None):
    keras.utils.set_random_seed(0)
    stage = STAGE_CLASSES[name](config, RunFolder(run), dataset)
    return stage, Step(stage.models, stage.optimizers, stage.updates)


def _train_steps(stage, step, n=2):
    for _ in range(n):
        metrics = step(stage.next_batch())
    step.sync()
    return {k: float(v) for k, v in metrics.items()}


def test_stage2_trains_encoder_and_leaves_generator_unchanged(trained_run, tiny_faces, tmp_path):
    config = config_for(trained_run, tiny_faces, tmp_path, stage="2")
    stage, step = _stage(config, "2", trained_run)
    g_before, e_before = weights(stage.models["generator"]), weights(stage.models["encoder"])
    metrics = _train_steps(stage, step)
    for before, after in zip(g_before, weights(stage.models["generator"])):
        np.testing.assert_array_equal(before, after)
    assert any(not np.array_equal(a, b) for a, b in zip(e_before, weights(stage.models["encoder"])))
    # the per-sample Euclidean loss and its all-zeros baseline (~sqrt(z_dim) = 10 for z of 100)
    assert metrics["stage2/loss/zeros_baseline"] == pytest.approx(10.0, abs=1.5)


@pytest.mark.parametrize("finetune_generator", [False, True])
def test_stage3_freezes_generator_and_fr_unless_asked(trained_run, tiny_faces, tmp_path, finetune_generator):
    config = config_for(trained_run, tiny_faces, tmp_path, stage="3", finetune_generator=finetune_generator)
    stage, step = _stage(config, "3", trained_run, load_data(config))
    before = {name: weights(model) for name, model in stage.models.items()}
    metrics = _train_steps(stage, step)
    assert np.isfinite(list(metrics.values())).all()
    changed = {
        name: any(not np.array_equal(a, b) for a, b in zip(before[name], weights(model)))
        for name, model in stage.models.items()
    }
    assert changed["encoder"]
    assert not changed["face_recognizer"]
    assert changed["generator"] == finetune_generator
    if finetune_generator:
        assert not changed["discriminator"]


def test_later_stages_fail_clearly_without_earlier_ones(tmp_path, tiny_faces):
    config = config_for(tmp_path / "empty", tiny_faces, tmp_path / "cache", stage="2")
    with pytest.raises(RunFolderError, match=r"models/generator.keras") as missing:
        train(config)
    assert re.search(r"models/generator.keras .* `python train.py --stage 1 --run ",
                     cli_message(missing.value))  # the stage that trains it, as a command
    assert "stage=age_cgan.training.maker_of('generator')" in str(missing.value)
    with pytest.raises(RunFolderError, match=r"stage 3 needs models/encoder.keras"):
        train(config.replace(stage="3"))


def test_run_folder_keeps_its_network_settings(trained_run, tiny_faces, tmp_path):
    config = config_for(trained_run, tiny_faces, tmp_path, stage="2", image_size=48)
    with pytest.raises(RunFolderError, match="image_size=32"):
        train(config)


def test_total_steps_defaults():
    config = TrainConfig(batch_size=128)
    assert config.total_steps("1", 110_000) == 85_938  # 100 epochs (paper)
    assert config.total_steps("2", None) == 782  # 100k synthetic pairs (paper)
    assert config.replace(steps=7).total_steps("3", 1000) == 7


def test_stage_fr_trains_the_face_recognizer_that_stage3_then_uses(tmp_path):
    from conftest import make_face_folder

    faces = make_face_folder(tmp_path / "UTKFace", count=24, size=TINY["image_size"])
    names = sorted(p.name for p in faces.iterdir())
    rng = np.random.default_rng(0)  # a stand-in teacher: descriptors keyed by file name
    np.savez(faces / "dlib_descriptors.npz", filenames=np.array(names),
             descriptors=rng.normal(size=(len(names), 128)).astype(np.float32))
    config = config_for(tmp_path / "run", faces, tmp_path / "cache", stage="fr", steps=2)
    summary = train(config)["fr"]
    assert summary["teacher"] and summary["steps_done"] == 2
    run = RunFolder(tmp_path / "run")
    assert run.has_model("face_recognizer")
    assert checkpoint_step(run.stage_dir("fr") / "checkpoint.npz") == 2
    saved = run.load_model("face_recognizer")
    used = stages_module.stage3_face_recognizer(run, config.replace(stage="3", fr_weights=None))
    for a, b in zip(weights(saved), weights(used)):
        np.testing.assert_array_equal(a, b)


def test_dry_run_reports_the_plan_and_writes_nothing(trained_run, tiny_faces, tmp_path, capsys):
    from age_cgan.cli.train import main

    fresh = tmp_path / "fresh"
    common = ["--data", str(tiny_faces), "--data-cache", str(tmp_path / "cache"),
              "--batch-size", "4", "--image-size", "32", "--no-progress", "--dry-run"]
    assert main(["--stage", "age-cgan", "--run", str(fresh), "--epochs", "2"] + common) == 0
    out = capsys.readouterr().out
    assert not fresh.exists()  # nothing written
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    train_faces = len(load_data(config_for(fresh, tiny_faces, tmp_path / "cache")).train())
    steps = -(-2 * train_faces // 4)
    assert rows["1"][1] == f"1-{steps}" and rows["1"][4] == "2.00"  # epochs -> steps
    assert rows["2"][1] == f"1-{-(-100_000 // 4)}"  # stage 2: the paper's 100k pairs
    # the trained run: its checkpoints refuse a plain restart, and --resume starts after them
    before = sorted(p.name for p in trained_run.rglob("*"))
    assert main(["--stage", "1", "--run", str(trained_run), "--steps", "5"] + common) == 0
    assert "refused: a checkpoint at step 2 exists" in capsys.readouterr().out
    assert main(["--stage", "1", "--run", str(trained_run), "--steps", "5", "--resume"]
                + common) == 0
    assert capsys.readouterr().out.splitlines()[2].split()[1] == "3-5"
    assert sorted(p.name for p in trained_run.rglob("*")) == before


# --- run-folder integrity: nothing lost, nothing silently wrong ------------------------------

def copy_run(trained_run, tmp_path):
    import shutil

    return shutil.copytree(trained_run, tmp_path / "copy")


def cli_args(run, data, cache, *more):
    return ["--stage", "1", "--run", str(run), "--data", str(data), "--data-cache", str(cache),
            "--batch-size", "4", "--image-size", "32", "--log-every", "1", "--sample-every", "2",
            "--checkpoint-every", "2", "--no-progress", *more]


def test_a_refused_command_leaves_the_run_folder_as_it_was(trained_run, tiny_faces, tmp_path,
                                                           capsys):
    from age_cgan.cli.train import main

    run = copy_run(trained_run, tmp_path)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    # stage 1 has a checkpoint: refused, and its config.json keeps its own batch size and seed
    assert main(cli_args(run, tiny_faces, tmp_path / "cache", "--steps", "3", "--seed", "7",
                         "--batch-size", "2")) == 1
    assert "already has a checkpoint at step 2" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    # a batch larger than the data: refused by --dry-run too, before anything is written
    fresh = tmp_path / "fresh"
    for extra in ([], ["--dry-run"]):
        assert main(cli_args(fresh, tiny_faces, tmp_path / "cache", "--steps", "2",
                             "--batch-size", "500", *extra)) == 1
        assert "--batch-size 500 is larger than the" in capsys.readouterr().err
        assert not fresh.exists()


@pytest.mark.parametrize("flag", ["--checkpoint-every", "--log-every", "--sample-every",
                                  "--z-dim", "--epochs", "--steps", "--batch-size"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_numeric_flags_are_bounded_before_any_work(flag, value, tmp_path, capsys):
    from age_cgan.cli.train import main

    with pytest.raises(SystemExit) as stop:
        main(["--stage", "1", "--run", str(tmp_path / "run"), flag, value])
    assert stop.value.code == 2
    assert f"{flag} must be" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


LOCK_HOLDER = """
import sys, time
from age_cgan.runs import RunFolder
with RunFolder(sys.argv[1]).lock():
    print("holding", flush=True)
    time.sleep(120)
"""


def test_a_second_writer_is_refused_while_a_live_process_holds_the_run(tmp_path, tiny_faces,
                                                                      capsys):
    import os
    import signal
    import subprocess
    import sys

    from age_cgan.cli.train import main
    from age_cgan.runs import RunLocked

    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(run)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(RunLocked, match=f"process {holder.pid} is training in it"):
            train(config_for(run, tiny_faces, tmp_path / "cache", stage="1", steps=2))
        assert main(cli_args(run, tiny_faces, tmp_path / "cache", "--steps", "2")) == 1
        assert f"process {holder.pid}" in capsys.readouterr().err
        assert main(cli_args(run, tiny_faces, tmp_path / "cache", "--steps", "2",
                             "--dry-run")) == 0  # the plan says so, and writes nothing
        assert f"refused now: process {holder.pid}" in capsys.readouterr().out
        assert sorted(p.name for p in run.iterdir()) == [".lock"]
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # the OS releases the lock of a killed process
        holder.wait()
    train(config_for(run, tiny_faces, tmp_path / "cache", stage="1", steps=2))
    assert checkpoint_step(run / "stage1" / "checkpoint.npz") == 2


SLOW_WRITER = """
import sys, time
from age_cgan.files import atomic_path
with atomic_path(sys.argv[1]) as tmp, open(tmp, "wb") as handle:
    handle.write(b"half a checkpoint" * 1000)
    handle.flush()
    print(tmp, flush=True)
    time.sleep(120)
"""


def test_temporaries_of_a_process_killed_while_writing_are_removed(trained_run, tiny_faces,
                                                                   tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from age_cgan.files import atomic_path

    run = copy_run(trained_run, tmp_path)
    checkpoint = run / "stage1" / "checkpoint.npz"
    good = checkpoint.read_bytes()
    writer = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(checkpoint)],
                              stdout=subprocess.PIPE, text=True)
    temporary = Path(writer.stdout.readline().strip())
    os.kill(writer.pid, signal.SIGKILL)  # kill -9 in the middle of the write
    writer.wait()
    assert temporary.is_file() and checkpoint.read_bytes() == good  # the old file, whole
    with atomic_path(run / "eval" / "live.json") as live:  # a live writer's temporary stays
        live.write_text("{}")
        with RunFolder(run).lock():
            assert not temporary.exists()
            assert live.exists()
    assert checkpoint_step(checkpoint) == 2


def test_damaged_checkpoint_is_named_and_overwrite_starts_over(trained_run, tiny_faces,
                                                               tmp_path, capsys):
    from age_cgan.cli.train import main

    run = copy_run(trained_run, tmp_path)
    checkpoint = run / "stage1" / "checkpoint.npz"
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    args = cli_args(run, tiny_faces, tmp_path / "cache", "--steps", "4")
    for extra in (["--resume"], []):
        assert main(args + extra) == 1
        err = capsys.readouterr().err
        assert f"{checkpoint} is damaged: not a whole .npz archive" in err and "--overwrite" in err
        assert "Traceback" not in err
    assert main(args + ["--resume", "--dry-run"]) == 0
    assert f"refused: {checkpoint} is damaged" in capsys.readouterr().out
    assert main(args + ["--overwrite"]) == 0
    assert checkpoint_step(checkpoint) == 4
    assert sorted(losses_by_step(run, 1)) == [1, 2, 3, 4]  # the old run's lines are gone


def test_resume_drops_the_metrics_logged_after_the_checkpoint(trained_run, tiny_faces, tmp_path):
    run = copy_run(trained_run, tmp_path)
    metrics = run / "stage1" / "metrics.jsonl"
    with metrics.open("a") as handle:  # what a process killed at step 3 left (checkpoint: 2)
        handle.write(json.dumps({"step": 3, "stage1/loss/d": 9.0}) + "\n" + '{"step": 4, "st')
    train(config_for(run, tiny_faces, tmp_path / "cache", stage="1", steps=4, resume=True))
    steps = [json.loads(line)["step"] for line in metrics.open()]
    assert steps == [1, 2, 3, 4]
    assert losses_by_step(run, 1)[3]["stage1/loss/d"] != 9.0


@pytest.mark.parametrize("text, expected", [
    ('{"image_size": 32, "age_bins": ', "is damaged: not valid JSON"),
    ('[1, 2]', "is damaged: it holds a JSON list"),
    ('{"image_size": "64"}', 'image_size must be an integer, not "64"'),
    ('{"age_bins": 42}', "age_bins must be a string, not 42"),
    ('{"age_bins": "60-20"}', "invalid setting"),
    ('{"z_dim": 0}', "z_dim must be at least 1"),
])
def test_config_json_is_checked_with_the_file_and_key_named(tmp_path, text, expected):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(RunFolderError, match="config.json") as error:
        RunFolder(tmp_path).read_config()
    assert expected in str(error.value)


def test_a_damaged_keras_file_is_reported_as_damaged(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path)
    model = run / "models" / "generator.keras"
    model.write_bytes(model.read_bytes()[:1000])
    with pytest.raises(RunFolderError, match="generator.keras \\(generator\\) is damaged") as error:
        RunFolder(run).load_model("generator")
    assert "--stage 1" in cli_message(error.value) and "--overwrite" in cli_message(error.value)
