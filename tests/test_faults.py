"""When the machine fails: a full disk, a file-size limit, a read-only cache, too little memory,
a resume with other settings, a crowded page. Each ends in one line that names the path (or the
setting), what is kept and what to do; the last good state stays, and --resume continues it.

Training runs are stage 1 of the lite networks at 32 px on the tiny fake faces, a few steps.
"""

import errno
import json
import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, TINY
from age_cgan.cli.train import main as train_main
from age_cgan.files import WriteFailed, atomic_path, write_error_code
from age_cgan.runs import RunFolder, _HELD_LOCKS
from age_cgan.training import checkpoint as checkpoint_module
from age_cgan.training import orchestration
from age_cgan.training import stages as stages_module
from age_cgan.training.checkpoint import checkpoint_step


def args(tiny_faces, run, *extra, steps=4, batch_size=4):
    return ["--stage", "1", "--arch", "lite", "--data", str(tiny_faces), "--run", str(run),
            "--data-cache", str(Path(run).parent / "cache"), "--steps", str(steps),
            "--batch-size", str(batch_size), "--image-size", "32", "--log-every", "1",
            "--sample-every", "2", "--checkpoint-every", "2", "--no-progress", *extra]


def losses(run):
    rows = [json.loads(line) for line in (Path(run) / "stage1" / "metrics.jsonl").open()]
    return {row["step"]: {k: v for k, v in row.items() if "/loss/" in k} for row in rows}


def error_line(err: str) -> str:
    """The one line a failed train.py wrote (and nothing that looks like a traceback)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("train.py: error:")]
    assert len(lines) == 1, err
    return lines[0]


def assert_left_clean(run):
    """No temporary file, and nobody holds the run folder's lock."""
    run = Path(run)
    assert not [p for p in run.rglob(".*.tmp*")], list(run.rglob(".*.tmp*"))
    assert str(run.resolve()) not in _HELD_LOCKS
    assert RunFolder(run).holder() is None


# --------------------------------------------------------------------------- the helpers


@pytest.mark.parametrize("code, words", [
    (errno.ENOSPC, "the disk is full"), (errno.EDQUOT, "the disk quota is used up"),
    (errno.EFBIG, "the file would exceed this process's file-size limit"),
    (errno.EROFS, "the file system is read-only"), (errno.EACCES, "permission is denied")])
def test_a_refused_write_is_one_line_naming_path_and_what_is_kept(tmp_path, code, words):
    target = tmp_path / "out" / "report.json"
    target.parent.mkdir()
    target.write_text("old")
    with pytest.raises(WriteFailed) as failed:
        with atomic_path(target, "the report") as tmp:
            tmp.write_text("half")
            raise OSError(code, os.strerror(code))
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith(f"cannot write the report ({target}): {words}")
    assert "the earlier report.json there is unchanged" in message.lower()
    assert target.read_text() == "old" and os.listdir(target.parent) == ["report.json"]
    assert isinstance(failed.value, OSError) and failed.value.errno == code


def test_a_wrapped_disk_error_is_recognised_by_its_words():
    class ResourceExhaustedError(Exception):  # as TensorFlow's file layer reports ENOSPC
        pass

    assert write_error_code(ResourceExhaustedError("events.out: No space left on device")) \
        == errno.ENOSPC
    assert write_error_code(ValueError("something else")) is None


def test_memory_errors_are_told_from_a_full_disk():
    from age_cgan.backend.memory import out_of_memory

    class ResourceExhaustedError(Exception):
        pass

    class XlaRuntimeError(RuntimeError):
        pass

    assert out_of_memory(MemoryError("Unable to allocate 3 GiB"))
    assert out_of_memory(ResourceExhaustedError("OOM when allocating tensor with shape[4]"))
    assert out_of_memory(XlaRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to "
                                         "allocate 1024 bytes."))
    assert not out_of_memory(ResourceExhaustedError("x.npz; No space left on device"))
    assert not out_of_memory(XlaRuntimeError("INVALID_ARGUMENT: shapes differ"))


# --------------------------------------------------------------------------- writes in training


FSIZE_TRAINER = textwrap.dedent("""
    import os, resource, sys
    from age_cgan.training import orchestration

    original, calls = orchestration.save_checkpoint, []

    def limited(path, *args, **kwargs):  # the second checkpoint meets a file-size limit
        calls.append(path)
        if len(calls) == 2:
            limit = os.path.getsize(path) // 4
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        return original(path, *args, **kwargs)

    orchestration.save_checkpoint = limited
    from age_cgan.cli.train import main
    sys.exit(main(sys.argv[1:]))
""")


def test_a_checkpoint_write_under_a_file_size_limit(tmp_path, tiny_faces, capsys):
    resource = pytest.importorskip("resource")
    if not hasattr(resource, "RLIMIT_FSIZE"):
        pytest.skip("no RLIMIT_FSIZE on this system")
    run = tmp_path / "limited"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", FSIZE_TRAINER, *args(tiny_faces, run)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 1, done.stderr[-3000:]
    line = error_line(done.stderr)
    checkpoint = run / "stage1" / "checkpoint.npz"
    assert line.startswith(f"train.py: error: cannot write the checkpoint of step 4 ({checkpoint})"
                           ": the file would exceed this process's file-size limit"), line
    assert "The checkpoint of step 2 is intact" in line
    assert line.endswith("raise the limit (`ulimit -f unlimited`) and resume with --resume."), line
    assert checkpoint_step(checkpoint) == 2
    assert_left_clean(run)
    # the kept checkpoint loads and --resume continues exactly where an unbroken run would be
    assert train_main(args(tiny_faces, tmp_path / "straight")) == 0
    assert train_main(args(tiny_faces, run, "--resume")) == 0
    assert checkpoint_step(checkpoint) == 4
    a, b = losses(tmp_path / "straight"), losses(run)
    assert sorted(b) == [1, 2, 3, 4]
    for step in (3, 4):
        for key in a[step]:
            assert b[step][key] == pytest.approx(a[step][key], rel=1e-4, abs=1e-5), (step, key)


def full_disk(code=errno.ENOSPC):
    def write(handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half a checkpoint")  # a torn file, as a full disk leaves
        raise OSError(code, os.strerror(code))
    return write


def test_a_checkpoint_writer_that_meets_a_full_disk(tmp_path, tiny_faces, monkeypatch, capsys):
    original, calls = orchestration.save_checkpoint, []

    def second_fails(path, *args, **kwargs):
        calls.append(path)
        with pytest.MonkeyPatch.context() as patch:
            if len(calls) == 2:
                patch.setattr(checkpoint_module.np, "savez", full_disk())
            return original(path, *args, **kwargs)

    monkeypatch.setattr(orchestration, "save_checkpoint", second_fails)
    run = tmp_path / "full"
    assert train_main(args(tiny_faces, run)) == 1
    line = error_line(capsys.readouterr().err)
    checkpoint = run / "stage1" / "checkpoint.npz"
    assert line == (f"train.py: error: cannot write the checkpoint of step 4 ({checkpoint}): the "
                    "disk is full (No space left on device). The checkpoint of step 2 is "
                    "intact; free space on that disk and resume with --resume."), line
    assert checkpoint_step(checkpoint) == 2
    assert_left_clean(run)
    assert train_main(args(tiny_faces, run, "--resume", steps=3)) == 0
    assert checkpoint_step(checkpoint) == 3 and sorted(losses(run)) == [1, 2, 3]


@pytest.mark.parametrize("writer", ["events", "model"])
def test_other_training_writers_on_a_full_disk(tmp_path, tiny_faces, monkeypatch, capsys, writer):
    from age_cgan.training.logging import EventWriter

    if writer == "events":  # TensorBoard's writer, as TensorFlow's file layer words it
        original, calls = EventWriter.scalar, []

        def scalar(self, step, tag, value):
            if step == 3:
                raise RuntimeError(f"{tag}: No space left on device")
            return original(self, step, tag, value)

        monkeypatch.setattr(EventWriter, "scalar", scalar)
    else:  # the finished networks, exported after the last checkpoint (over a quota)
        def save_model(self, model, network):
            with atomic_path(self.model_path(network), f"the trained {network}") as tmp:
                tmp.write_bytes(b"PK")
                raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

        monkeypatch.setattr(RunFolder, "save_model", save_model)
    run = tmp_path / writer
    assert train_main(args(tiny_faces, run)) == 1
    line = error_line(capsys.readouterr().err)
    if writer == "events":
        assert line.startswith(f"train.py: error: cannot write the TensorBoard events "
                               f"({run / 'stage1'}): the disk is full"), line
        assert f"The checkpoint of step 2 ({run / 'stage1' / 'checkpoint.npz'}) is intact" \
            in line
    else:
        assert line.startswith("train.py: error: cannot write the trained generator "
                               f"({run / 'models' / 'generator.keras'}): the disk quota"), line
        assert "The checkpoint of step 4" in line
        assert not (run / "models" / "generator.keras").exists()
    assert line.endswith("and resume with --resume."), line
    assert_left_clean(run)
    monkeypatch.undo()
    assert train_main(args(tiny_faces, run, "--resume")) == 0
    assert checkpoint_step(run / "stage1" / "checkpoint.npz") == 4
    assert RunFolder(run).has_model("generator")


# --------------------------------------------------------------------------- the face cache


@pytest.mark.parametrize("how", ["read-only", "a file"])
def test_a_cache_folder_that_cannot_be_written_is_skipped_with_one_warning(
        tmp_path, tiny_faces, monkeypatch, how):
    from age_cgan.data import load_dataset

    cache = tmp_path / "cache"
    if how == "a file":
        cache.write_text("a file where the cache folder should be")
        words = "a file is where a folder is expected"
    else:  # root writes anywhere: the file system itself says no
        real_mkdir = Path.mkdir

        def mkdir(self, *args, **kwargs):
            if self == cache:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", mkdir)
        words = "the file system is read-only"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = load_dataset(tiny_faces, image_size=32, cache_dir=cache, progress=False)
    assert len(dataset) == 24  # the data still loads
    messages = [str(w.message) for w in caught if "face cache" in str(w.message)]
    assert len(messages) == 1, messages
    assert messages[0].startswith(f"could not write the face cache {cache}/"), messages
    assert words in messages[0] and "decoded again next time" in messages[0]
    assert "\n" not in messages[0]


# --------------------------------------------------------------------------- memory


@pytest.mark.parametrize("kind", ["MemoryError", "ResourceExhaustedError", "XlaRuntimeError"])
def test_a_batch_too_big_for_memory_names_the_batch_size(tmp_path, tiny_faces, monkeypatch,
                                                         capsys, kind):
    import tensorflow as tf

    class XlaRuntimeError(RuntimeError):
        pass

    errors = {
        "MemoryError": MemoryError("Unable to allocate 1.50 GiB for an array with shape "
                                   "(4, 32, 32, 3) and data type float32"),
        "ResourceExhaustedError": tf.errors.ResourceExhaustedError(
            None, None, "OOM when allocating tensor with shape[4,64,16,16] and type float\n"
            "Hint: If you want to see a list of allocated tensors when OOM happens ..."),
        "XlaRuntimeError": XlaRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to "
                                           "allocate 1610612736 bytes."),
    }
    original, calls = stages_module.Stage1.next_batch, {"n": 0}

    def too_big(self):
        calls["n"] += 1
        if calls["n"] == 3:
            raise errors[kind]
        return original(self)

    monkeypatch.setattr(stages_module.Stage1, "next_batch", too_big)
    run = tmp_path / "oom"
    assert train_main(args(tiny_faces, run)) == 1
    line = error_line(capsys.readouterr().err)
    checkpoint = run / "stage1" / "checkpoint.npz"
    assert line.startswith(f"train.py: error: stage 1 ran out of memory at step 3 with "
                           f"--batch-size 4 ({kind}: "), line
    assert (f"The checkpoint of step 2 ({checkpoint}) is intact, but it continues only with "
            "--batch-size 4: free memory by closing other programs and resume with --resume, or "
            "start the stage again with --batch-size 2 --overwrite.") in line, line
    assert checkpoint_step(checkpoint) == 2
    assert_left_clean(run)
    if kind == "MemoryError":  # the run folder stays resumable
        monkeypatch.undo()
        assert train_main(args(tiny_faces, run, "--resume", steps=3)) == 0
        assert checkpoint_step(checkpoint) == 3


# --------------------------------------------------------------------------- resume


def test_a_resume_with_another_batch_size_names_both_ways_out(tmp_path, tiny_faces, capsys):
    run = tmp_path / "batch"
    assert train_main(args(tiny_faces, run, steps=2)) == 0
    checkpoint = run / "stage1" / "checkpoint.npz"
    def files():  # the lock file is rewritten by every command that takes the lock
        return {p: p.stat().st_mtime_ns for p in run.rglob("*")
                if p.is_file() and p.name != ".lock"}

    before = files()
    capsys.readouterr()
    assert train_main(args(tiny_faces, run, "--resume", batch_size=8)) == 1
    line = error_line(capsys.readouterr().err)
    assert line == (f"train.py: error: stage 1's checkpoint at step 2 ({checkpoint}) was written "
                    "with --batch-size 4; this command asks for 8, and a resumed stage must draw "
                    "the batches it would have drawn. Pass --batch-size 4 to continue it, or "
                    "--overwrite to start the stage again with batch size 8 (its checkpoint is "
                    "replaced)."), line
    assert files() == before  # refused before anything was written
    assert train_main(args(tiny_faces, run, "--resume", "--dry-run", batch_size=8)) == 0
    assert "refused: stage 1's checkpoint at step 2" in capsys.readouterr().out
    # other training faces (another split) are refused with the settings that fix it
    assert train_main(args(tiny_faces, run, "--resume", "--test-fraction", "0.5")) == 1
    line = error_line(capsys.readouterr().err)
    assert re.search(r"at step 2 \(.*\) was written for \d+ training faces; the data now gives "
                     r"\d+ \(--data, --test-fraction or --seed changed", line), line
    assert "or --overwrite to start the stage again on this data" in line
    # the way out it names works
    assert train_main(args(tiny_faces, run, "--resume", steps=3)) == 0
    assert checkpoint_step(checkpoint) == 3


# --------------------------------------------------------------------------- the page under load


def test_the_page_answers_or_turns_away_concurrent_users(tmp_path):
    """Three users at once, two photos each, on the shipped model: every request is answered
    (or turned away with the page's queue message), none fails, memory stays flat."""
    pytest.importorskip("dlib")
    pytest.importorskip("gradio")
    pytest.importorskip("gradio_client")
    import importlib.util

    from age_cgan.examples import PORTRAIT

    spec = importlib.util.spec_from_file_location("bench_app", REPO / "benchmarks/bench_app.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    serve = ["--no-judges"]
    labels = bench.served_labels(serve)
    with bench.started_page(serve, log=tmp_path / "server.log") as (url, process):
        report = bench.load_test(url, process.pid, PORTRAIT, labels, users=3, photos_each=2)
    assert report["requests"] == 6, report
    assert report["failed"] == 0, report["failures"]
    assert report["answered"] + report["turned away"] == 6 and report["answered"] >= 1, report
    assert all(m.startswith("Aged 1 face") or "queue" in m.lower()
               for m in report["messages"]), report["messages"]
    assert report["memory_mib"]["growth"] < 256, report["memory_mib"]
