"""Data parallel training on 2 virtual CPU devices equals training on 1, on both backends.

Each backend runs in a subprocess, where the 2 devices are made before the backend starts
(JAX: XLA_FLAGS=--xla_force_host_platform_device_count=2; TensorFlow: two logical CPUs from
tf.config.set_logical_device_configuration). That process trains one step of every stage on 1
device and on 2 (the 2-device run starting from the 1-device run's networks, so each stage is
compared on its own), resumes across device counts, and prints what it measured as JSON.

BatchNorm: on JAX the jitted step sees the global batch, so its statistics are the whole
batch's; on TensorFlow the step all-reduces them over replicas (``synchronized``), so neither
backend has per-replica statistics and 2 devices must give the 1-device numbers. Dropout: JAX
draws the global batch's mask (the same as on 1 device); TensorFlow replicas draw their own, so
the TensorFlow run builds G without dropout on both sides.

Tolerances (float32; summation order differs between 1 and 2 devices): losses within 1e-4
relative (+1e-5 absolute); weights within 2 x the stage's learning rate, the most one Adam step
can move a weight: where a gradient is ~0, rounding can flip its sign and so the step's.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, make_face_folder

PROBE = r'''
import functools, json, os, shutil, sys
from pathlib import Path
import numpy as np

backend = os.environ["KERAS_BACKEND"]
if backend == "tensorflow":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from age_cgan import networks
if backend == "tensorflow":  # replicas draw their own dropout masks: off on both sides
    networks.build_generator = functools.partial(networks.build_generator, dropout=0.0)
from age_cgan.config import TrainConfig
from age_cgan.runs import RunFolder
from age_cgan.training.checkpoint import load_checkpoint
from age_cgan.backend.devices import local_devices
from age_cgan.training import train

faces, tmp = Path(sys.argv[1]), Path(sys.argv[2])
# --arch lite: its small FR compiles in seconds under MirroredStrategy, where InceptionResNetV2
# with 2 synchronised replicas took longer than this test may (over 7 minutes on 2 CPU cores)
base = dict(data=str(faces), data_cache=str(tmp / "cache"), image_size=32, batch_size=4,
            arch="lite", fr_weights="none", fr_input_size=75, log_every=1, sample_every=1, checkpoint_every=1,
            grid_rows=2, progress=False, steps=1)
TRAINED = {"1": ["generator", "discriminator"], "2": ["encoder"], "3": ["encoder"],
           "fr": ["face_recognizer"]}
out = {"devices": len(local_devices(2)), "stages": {}}

def last_losses(run, stage):
    rows = [json.loads(l) for l in open(run / f"stage{stage}" / "metrics.jsonl")]
    return {k: v for k, v in rows[-1].items() if "/loss/" in k or k.startswith("fr/")
            or "/d/" in k}

def weights(run, name):  # float variables: weights and BatchNorm statistics (not seed states)
    return [np.asarray(v.numpy()) for v in RunFolder(run).load_model(name).variables
            if "float" in str(v.dtype)]

one, two = tmp / "d1", tmp / "d2"
for stage in ["1", "2", "3", "fr"]:
    if stage != "1":  # the 2-device stage starts from the 1-device run's networks
        shutil.rmtree(two / "models")
        shutil.copytree(one / "models", two / "models")
    for n, run in ((1, one), (2, two)):
        train(TrainConfig(run=str(run), stage=stage, devices=n, **base))
    a, b = last_losses(one, stage), last_losses(two, stage)
    out["stages"][stage] = {
        "losses_1": a, "losses_2": b,
        "max_weight_diff": max(float(np.abs(x - y).max()) for name in TRAINED[stage]
                               for x, y in zip(weights(one, name), weights(two, name))),
    }
    config = json.loads((two / "config.json").read_text())
    out["stages"][stage]["recorded"] = [config["devices"], config["device_count"]]

# resume across device counts: 2 steps on N, the 3rd on M, against 3 steps on 1 device
def stage1(run, devices, steps, resume=False):
    train(TrainConfig(run=str(tmp / run), stage="1", devices=devices, resume=resume,
                      **{**base, "steps": steps}))
    return last_losses(tmp / run, "1")

out["resume"] = {"straight": stage1("r11", 1, 3)}
for first, then in ((2, 1), (1, 2)):
    stage1(f"r{first}{then}", first, 2)
    out["resume"][f"{first}->{then}"] = stage1(f"r{first}{then}", then, 3, resume=True)
ckpt = np.load(tmp / "r21" / "stage1" / "checkpoint.npz")
ref = np.load(tmp / "r11" / "stage1" / "checkpoint.npz")
out["checkpoint_keys_equal"] = sorted(ckpt.files) == sorted(ref.files)
print("RESULT " + json.dumps(out))
'''


def run_probe(backend, tmp_path, faces):
    if backend == "jax":
        pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if backend == "jax":  # before JAX starts: two host devices
        env.update(JAX_PLATFORMS="cpu",
                   XLA_FLAGS=(env.get("XLA_FLAGS", "") +
                              " --xla_force_host_platform_device_count=2").strip())
    result = subprocess.run([sys.executable, "-c", PROBE, str(faces), str(tmp_path)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=1800)
    lines = [l for l in result.stdout.splitlines() if l.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-5000:]
    return json.loads(lines[-1][len("RESULT "):])


LEARNING_RATES = {"1": 2e-4, "2": 1e-3, "3": 2e-4, "fr": 1e-3}  # TrainConfig's defaults


def faces_with_teacher(tmp_path, tiny_faces):
    """The tiny faces plus a dlib_descriptors.npz (a random stand-in teacher for stage fr)."""
    # at the probe's image size: the teacher's descriptors are read for files of that size
    folder = make_face_folder(tmp_path / "faces" / "UTKFace", size=32)
    names = sorted(p.name for p in folder.glob("*.jpg"))
    descriptors = np.random.default_rng(0).normal(size=(len(names), 128)).astype(np.float32)
    np.savez(folder / "dlib_descriptors.npz", filenames=np.array(names), descriptors=descriptors)
    return folder


@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_two_devices_train_every_stage_as_one_and_resume_across_counts(
        backend, tmp_path, tiny_faces):
    measured = run_probe(backend, tmp_path, faces_with_teacher(tmp_path, tiny_faces))
    assert measured["devices"] == 2
    for stage, row in measured["stages"].items():
        if backend == "tensorflow" and stage == "fr":
            # per-replica relational and triplet terms (see face_recognizer.py): compare the
            # cosine term only, which is a mean over rows
            keys = ["fr/loss/cosine"]
        else:
            keys = list(row["losses_1"])
        assert keys, row
        for key in keys:
            assert row["losses_2"][key] == pytest.approx(row["losses_1"][key], rel=1e-4,
                                                         abs=1e-5), (stage, key, row)
        if not (backend == "tensorflow" and stage == "fr"):
            assert row["max_weight_diff"] <= 2 * LEARNING_RATES[stage], (stage, row)
        assert row["recorded"] == [2, 2]
    straight = measured["resume"]["straight"]
    for route in ("2->1", "1->2"):
        for key, value in straight.items():
            assert measured["resume"][route][key] == pytest.approx(value, rel=1e-4, abs=1e-5), (
                route, key)
    assert measured["checkpoint_keys_equal"]


def test_batch_size_must_divide_over_the_devices():
    from age_cgan.config import TrainConfig
    from age_cgan.backend.devices import DeviceError, check_batch, parse_devices

    with pytest.raises(ValueError, match="does not divide over 4 devices"):
        TrainConfig(batch_size=30, devices=4)
    with pytest.raises(DeviceError, match=r"multiple of 4 \(e.g. 28 or 32\)"):
        check_batch(30, 4)
    with pytest.raises(ValueError, match="positive number or 'all'"):
        TrainConfig(devices=0)
    assert parse_devices("ALL") == "all" and parse_devices("2") == 2


def test_devices_flag_errors_name_the_problem(capsys):
    from age_cgan.cli.train import main

    with pytest.raises(SystemExit):
        main(["--devices", "two"])
    assert "--devices: must be a positive number or all" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--devices", "3", "--batch-size", "8"])
    assert "--batch-size 8 does not divide over 3 devices" in capsys.readouterr().err


TENSORBOARD_WITHOUT_TENSORFLOW = r'''
import json, sys
sys.modules["tensorflow"] = None  # `import tensorflow` now fails, as where it is not installed
import numpy as np
from age_cgan.training.logging import StageLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

folder = sys.argv[1]
logger = StageLogger(folder)
logger.scalars(3, {"stage1/loss/d": 0.25, "perf/stage1/images_per_sec": 12.5})
grid = np.zeros((8, 12, 3), np.uint8); grid[2:4, 5:9] = (255, 128, 0)
logger.image(3, "stage1/samples_by_age", grid)
logger.text(0, "stage1/config", "| setting | value |")
logger.close()
events = EventAccumulator(folder, size_guidance={"tensors": 0})
events.Reload()
def values(tag):
    return [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)]
(step, loss), = values("stage1/loss/d")
(_, image), = values("stage1/samples_by_age")
(_, text), = values("stage1/config")
import io
from PIL import Image
png = np.asarray(Image.open(io.BytesIO(image[2])))
print("RESULT " + json.dumps({
    "loss": [step, float(loss)], "speed": float(values("perf/stage1/images_per_sec")[0][1]),
    "size": [image[0].decode(), image[1].decode()], "png_equal": bool((png == grid).all()),
    "text": text.item().decode(), "tensorflow_loaded": sys.modules["tensorflow"] is not None,
    "plugins": sorted({events.SummaryMetadata(t).plugin_data.plugin_name
                       for t in events.Tags()["tensors"]})}))
'''


def test_tensorboard_events_are_written_and_read_without_tensorflow(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    pytest.importorskip("jax")
    result = subprocess.run([sys.executable, "-c", TENSORBOARD_WITHOUT_TENSORFLOW, str(tmp_path)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    lines = [l for l in result.stdout.splitlines() if l.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-3000:]
    read = json.loads(lines[-1][len("RESULT "):])
    assert read["loss"] == [3, 0.25] and read["speed"] == 12.5
    assert read["size"] == ["12", "8"] and read["png_equal"]
    assert read["text"] == "| setting | value |"
    assert read["plugins"] == ["images", "scalars", "text"]
    assert not read["tensorflow_loaded"]
    assert list(tmp_path.glob("events.out.tfevents.*"))
