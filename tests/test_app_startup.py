"""age-cgan-app's start-up, without a model or a server: TensorFlow's C++ start-up lines are
filtered as infer.py filters them (age_cgan/cli/quiet.py), and its messages name our flags."""

import configparser
import os
import subprocess
import sys

from conftest import REPO

from age_cgan import app

NOISE = ("I0000 00:00:1796409668.433058    3947 port.cc:153] oneDNN custom operations are on.",
         "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
         "E0000 00:00:1796409672.497295    3947 cuda_platform.cc:52] failed call to cuInit")

#: ``serve`` replaced by one that writes to descriptor 2 as TensorFlow's C++ start-up does.
FAKE_SERVE = f"""
import os, sys, time
from age_cgan import app

def serve(args):
    for line in {NOISE!r}:
        os.write(2, (line + "\\n").encode())
    os.write(2, b"a line of another library\\n")
    print("age-cgan-app: serving (fake)", file=sys.stderr)
    time.sleep(0.5)  # the filter thread writes what it keeps
    return 0

app.serve = serve
sys.argv = ["age-cgan-app", *sys.argv[1:]]
app.console()
"""


def start(*argv):
    env = {k: v for k, v in os.environ.items() if k != "AGE_CGAN_VERBOSE"}
    return subprocess.run([sys.executable, "-c", FAKE_SERVE, *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_app_filters_the_backends_start_up_lines():
    quiet = start()
    assert quiet.returncode == 0, quiet.stderr
    assert "age-cgan-app: serving (fake)" in quiet.stderr
    assert "a line of another library" in quiet.stderr  # only the absl-format lines go
    assert not any(line.split("]")[0] in quiet.stderr for line in NOISE), quiet.stderr
    verbose = start("--verbose")
    assert verbose.returncode == 0, verbose.stderr
    assert all(line in verbose.stderr for line in NOISE)


def test_the_console_script_is_the_quiet_one():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    scripts = config["options.entry_points"]["console_scripts"]
    assert "age-cgan-app = age_cgan.app:console" in scripts


def test_the_start_up_messages_name_our_flags():
    local = app.launch_lines("http://127.0.0.1:7860/", share=False, share_url=None)
    assert "http://127.0.0.1:7860/" in local[0]
    assert any("--share" in line for line in local)
    shared = app.launch_lines("http://127.0.0.1:7860/", True, "https://abc.gradio.live")
    assert any("https://abc.gradio.live" in line for line in shared)
    failed = app.launch_lines("http://127.0.0.1:7860/", True, None)
    assert any("no public link" in line for line in failed)
    for line in local + shared + failed:
        assert "share=True" not in line and "launch()" not in line
