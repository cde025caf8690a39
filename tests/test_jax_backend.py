"""The backend is fixed per process: the backend-agnostic parts again, under JAX.

The JAX runs also hide TensorFlow, as on the GPU machine that has JAX but no TensorFlow: the
networks, the three stages and the logging must all work there.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, TINY

# An import hook that makes `import tensorflow` fail as if it were not installed.
NO_TENSORFLOW = (
    "import sys, importlib.abc\n"
    "class NoTF(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'tensorflow' or name.startswith('tensorflow.'):\n"
    "            raise ImportError('No module named ' + repr(name))\n"
    "sys.meta_path.insert(0, NoTF())\n"
)


def run_under_jax(code, timeout=900):
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-c", NO_TENSORFLOW + code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_networks_under_jax():
    result = run_under_jax(
        "import pytest; raise SystemExit(pytest.main(['-q', '-p', 'no:cacheprovider', "
        "'tests/test_networks.py']))"
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert " passed" in result.stdout


def test_every_stage_steps_under_jax_without_tensorflow(tmp_path, tiny_faces):
    run = tmp_path / "jax-run"
    args = ["--stage", "age-cgan", "--data", str(tiny_faces), "--run", str(run), "--steps", "1",
            "--batch-size", "4", "--image-size", str(TINY["image_size"]), "--fr-weights", "none",
            "--fr-input-size", str(TINY["fr_input_size"]), "--data-cache", str(tmp_path / "cache"),
            "--no-progress"]
    result = run_under_jax(f"from age_cgan.cli.train import main; raise SystemExit(main({args!r}))")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    for stage in "123":  # TensorBoard events through the tensorboard package, no TensorFlow
        assert list((run / f"stage{stage}").glob("events.out.tfevents.*"))
    for stage in "123":
        rows = [json.loads(line) for line in (run / f"stage{stage}" / "metrics.jsonl").open()]
        losses = [v for k, v in rows[-1].items() if "/loss/" in k]
        assert rows[-1]["step"] == 1 and losses and all(v == v for v in losses)
        assert list((run / f"stage{stage}" / "samples").glob("*.png"))
    assert json.loads((run / "config.json").read_text())["backend"] == "jax"
