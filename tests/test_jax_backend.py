"""The backend is fixed per process: run the backend-agnostic tests again under JAX."""

import os
import subprocess
import sys

import pytest

from conftest import REPO

JAX_TESTS = ["tests/test_networks.py"]


def test_networks_under_jax():
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *JAX_TESTS],
        cwd=REPO, env=env, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert " passed" in result.stdout
