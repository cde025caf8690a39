"""``age-cgan-app`` / ``python -m age_cgan.app``: a local web page that ages the face in a photo.

Upload a photo (or take one with the webcam), choose the target ages and the per-photo method,
and get the grid ``input | reconstruction | each age``, each aged face as its own image (with the
judges' verdict when the ``[eval]`` extra is installed), and a zip of it all to download. A
group photo lists its faces, largest first; pick one and press the button again. Detection,
cropping and the grid are ``age_cgan.cli.infer``'s; aging is ``AgingModels`` (one call site,
``age_face``). Needs the optional extra: ``pip install "age-cgan[app]"`` (Gradio).

Safe by default:

* binds 127.0.0.1 (``--host``/``--port`` to change); no public share link unless ``--share``;
* no analytics or version check (``GRADIO_ANALYTICS_ENABLED=False``, ``HF_HUB_OFFLINE=1``), and
  the page loads nothing from other hosts (the test records the browser's requests);
* uploads are bounded in bytes (``MAX_UPLOAD_BYTES``, refused by the server before the handler)
  and in pixels (``MAX_PIXELS``, read from the header before decoding: a decompression bomb is
  refused with a message, never decoded);
* one request at a time (a queue of at most ``QUEUE_SIZE``): Keras models are not shared
  between threads, and a 2-core CPU gains nothing from two at once;
* a photo without a face or an unreadable file gives a message on the page, not an error;
* the uploaded photo is deleted when its request ends: only its face crops (64x64) stay, in the
  server's memory for that browser session (so other ages or faces need no new upload), for at
  most ``KEEP_SECONDS``. Results live in a private temporary folder (mode 0700) until Gradio's
  cache clean-up (every minute, files older than ``KEEP_SECONDS``) or the app's exit, which
  removes the folder.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from pathlib import Path

from age_cgan.errors import AgeCganError, raw_message, render, setting
from age_cgan.files import WriteFailed, write_text, writing

PROG = "age-cgan-app"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
#: A phone photo is 2-8 MB; larger uploads are refused by the server before any handler runs.
MAX_UPLOAD_BYTES = 12 * 1024 * 1024
#: A 48-megapixel phone photo is 8000x6000; anything larger is refused before decoding.
MAX_PIXELS = 50_000_000
#: Requests waiting beyond the one in progress; more are turned away with "queue full".
QUEUE_SIZE = 16
#: Face crops (memory) and results (disk) are dropped after this many seconds.
KEEP_SECONDS = 600
#: Aged faces are shown at least this many pixels wide (the model's 64 px, zoomed).
DISPLAY_SIDE = 128


class AppError(AgeCganError, RuntimeError):
    """The app cannot start (no model, bad arguments); the message says what to do."""


def page_words(part: dict) -> str:
    """A library message's setting or command as the page's user reads it: plainly, since a
    page has no flags (``run`` -> "the run setting", a command -> "the evaluate command")."""
    if "setting" in part:
        return f"the {part['setting'].replace('_', ' ')} setting"
    return f"the {part.get('command', 'train')} command"


def page_message(error: BaseException) -> str:
    """``error``'s message for the page (settings worded plainly, no flags)."""
    return render(raw_message(error), page_words)


def aging_methods(models) -> tuple[str, ...]:
    """The per-photo methods, as ``age_cgan.aging`` names them, the model's default first (the
    one ``infer.py`` uses too: ``AgingModels.default_method``)."""
    from age_cgan.aging import METHODS

    default, _ = models.default_method()
    return (default, *(m for m in METHODS if m != default))


def age_face(models, face, method: str, categories):
    """The app's one call that ages a detected face (``faces.Face``) by method name ->
    ``AgedFace``: the change added at the crop's own size, at the model's strength."""
    return models.age(face.image, optimize=method, categories=categories, progress=False,
                      strength=models.default_strength(method), detail=face.detail)


# --------------------------------------------------------------------------- model


def model_folder(run=None, model=None) -> Path:
    """The run-like folder to serve: ``run`` as it is; else the packaged model folder ``model``
    (default: the shipped one), checked against its SHA256SUMS as infer.py checks it. Raises
    AppError saying what to pass instead."""
    if run:
        return Path(run)
    try:
        from age_cgan.pretrained import PretrainedError, verified_run
    except ImportError:
        raise AppError("this install has no shipped model (age_cgan.pretrained); pass "
                       f"{setting('run')} with a folder train.py wrote, e.g. "
                       f"{setting('run', 'logs/run')}") from None
    try:
        return Path(verified_run(model))
    except PretrainedError as error:
        raise AppError(f"{raw_message(error)}; reinstall age-cgan, or pass "
                       f"{setting('run', 'DIR')} (a train.py run) or {setting('model', 'DIR')} "
                       "(a packaged model folder)") from None


def load_judges(enabled: bool = True):
    """(FaceVerifier, AgeEstimator) from the ``[eval]`` extra, or (None, None) without it."""
    if not enabled:
        return None, None
    from age_cgan.judges import AgeEstimator, FaceVerifier, JudgeUnavailable

    try:
        return FaceVerifier(), AgeEstimator()
    except JudgeUnavailable:
        return None, None


# --------------------------------------------------------------------------- requests


def check_upload(path: Path) -> None:
    """Refuse an upload by its header alone: too many bytes or pixels (a decompression bomb),
    or not an image. Raises ``faces.UnreadablePhoto`` naming the file by its own name."""
    from PIL import Image, UnidentifiedImageError

    from age_cgan.faces import UnreadablePhoto

    name = path.name
    size = path.stat().st_size if path.is_file() else 0
    if size > MAX_UPLOAD_BYTES:
        raise UnreadablePhoto(name, f"the file is {size / 2**20:.1f} MB; the limit is "
                              f"{MAX_UPLOAD_BYTES / 2**20:.0f} MB")
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        width = height = None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return  # read_photo says why, with the same messages as infer.py
    if width is None or width * height > MAX_PIXELS:
        shown = f" ({width}x{height} px)" if width else ""
        raise UnreadablePhoto(name, f"the image is too large{shown}: at most "
                              f"{MAX_PIXELS / 1e6:.0f} megapixels are decoded (this guards "
                              "against decompression bombs); resize the photo and try again")


class AgingApp:
    """The page's handler: photo -> faces -> aged face, judged; no Gradio import here, so it is
    testable and measurable without a server."""

    def __init__(self, models, detector, scratch: Path, upload_root: Path | None = None,
                 verifier=None, estimator=None):
        self.models, self.detector = models, detector
        self.scratch, self.upload_root = Path(scratch), upload_root
        self.verifier, self.estimator = verifier, estimator
        self.methods = aging_methods(models)
        self._lock = threading.Lock()  # the queue runs one request at a time; this makes sure

    @property
    def judged(self) -> bool:
        return self.verifier is not None or self.estimator is not None

    def faces_of(self, photo, session: dict) -> list:
        """The face crops of an uploaded photo, largest first (raises PhotoError). The upload
        is read once and deleted; its crops stay in ``session`` for later requests."""
        from age_cgan.faces import PhotoError, find_faces

        key = str(photo)
        if session.get("photo") == key and time.time() - session.get("time", 0) < KEEP_SECONDS:
            return session["faces"]
        path = Path(photo)
        if not path.is_file():
            raise PhotoError(path.name, "the photo is no longer on the server; upload it again")
        try:
            check_upload(path)
            faces = find_faces(path, self.models.image_size, self.detector)
        except PhotoError as error:
            raise PhotoError(path.name, error.message.removeprefix(f"{error.path}: ")) from None
        finally:
            self._forget_upload(path)
        session.clear()
        session.update(photo=key, faces=faces, time=time.time())
        return faces

    def _forget_upload(self, path: Path) -> None:
        """Delete an uploaded file (and its folder, when empty): only inside the upload folder,
        never a file the handler was given from elsewhere."""
        if self.upload_root is None or not path.resolve().is_relative_to(self.upload_root):
            return
        path.unlink(missing_ok=True)
        try:
            path.parent.rmdir()
        except OSError:
            pass

    def age(self, photo, ages, method: str, face_index, session: dict | None = None) -> dict:
        """Age one face of a photo. Returns a dict: ``message`` (Markdown), ``faces`` (the crops),
        ``face`` (index used), ``grid`` (uint8 image), ``aged`` [(image, caption)], ``download``
        (a zip path) and ``record``; on a photo problem only ``message`` (and no images)."""
        from age_cgan.cli.infer import parse_ages
        from age_cgan.faces import PhotoError

        session = {} if session is None else session
        if not photo:
            return {"message": "Upload a photo (or take one with the webcam) first."}
        if method not in self.methods:
            return {"message": f"Unknown method {method!r}: choose one of {', '.join(self.methods)}."}
        labels = [a for a in (ages or []) if a in self.models.bins.labels]
        if not labels:
            return {"message": "Choose at least one target age."}
        categories = parse_ages(",".join(labels), self.models.bins)
        with self._lock:
            start = time.perf_counter()
            try:
                faces = self.faces_of(photo, session)
            except PhotoError as error:
                return {"message": f"**Could not use this photo.** {page_message(error)}"}
            index = min(max(int(face_index or 0), 0), len(faces) - 1)
            aged = age_face(self.models, faces[index], method, categories)
            verdicts = self._judge(aged)
            try:
                result = self._result(aged, verdicts, faces, index, start)
            except WriteFailed as error:  # the server's disk: say so here, in full in its log
                print(f"{PROG}: {error}", file=sys.stderr)
                return {"message": f"**Could not save the result:** {error.reason} on the "
                        "server. Try again later."}
        self._prune()
        return result

    def _judge(self, aged) -> list[dict]:
        if not self.judged:
            return [{} for _ in aged.aged]
        from age_cgan.judges import judge_aged

        return judge_aged(aged.face, aged.aged, self.verifier, self.estimator)

    def _result(self, aged, verdicts, faces, index, start) -> dict:
        from age_cgan.cli.infer import _grid, _write_face

        zoom = max(1, round(DISPLAY_SIDE / aged.face.shape[0]))
        grid, images, _ = _grid(aged, zoom)
        captions = [caption(label, verdict) for label, verdict in zip(aged.labels, verdicts)]
        record = {"face": index + 1, "faces": len(faces), **aged.record(),
                  "ages": [{"category": label, **verdict}
                           for label, verdict in zip(aged.labels, verdicts)]}
        folder = self.scratch / uuid.uuid4().hex
        _write_face(aged, folder / "aged" / "grid.png", zoom, separate=True)
        write_text(folder / "aged" / "result.json", json.dumps(record, indent=1) + "\n")
        download = folder / "aged.zip"
        with writing(download, "the download"), \
                zipfile.ZipFile(download, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted((folder / "aged").rglob("*")):
                if file.is_file():
                    archive.write(file, file.relative_to(folder))
        shutil.rmtree(folder / "aged")
        seconds = time.perf_counter() - start
        record["seconds_request"] = round(seconds, 3)
        which = f"face {index + 1} of {len(faces)} (largest first)" if len(faces) > 1 else "1 face"
        looks = (f" (the age estimator's guess, {aged.source_confidence:.0%} sure)"
                 if aged.source_confidence is not None else "")
        message = (f"Aged {which} with method **{aged.optimize}** in {seconds:.1f} s; "
                   f"the photo looks **{aged.source_label}** to the model{looks}.")
        if len(faces) > 1:
            message += " Pick another face under *Face* and press the button again."
        if not self.judged:
            message += ' (Install `age-cgan[eval]` for the judges\' verdicts.)'
        return {"message": message, "faces": [f.image for f in faces], "face": index,
                "grid": grid, "aged": list(zip(images[2:], captions)), "download": str(download),
                "record": record}

    def _prune(self) -> None:
        """Delete results older than KEEP_SECONDS from the scratch folder."""
        limit = time.time() - KEEP_SECONDS
        for entry in self.scratch.iterdir():
            try:
                if entry.stat().st_mtime < limit:
                    shutil.rmtree(entry, ignore_errors=True)
            except FileNotFoundError:
                pass


def caption(label: str, verdict: dict) -> str:
    """'60+', with the judges' verdict when there is one: '60+ · same person (0.41) · looks 63'."""
    parts = [label]
    if "same_person" in verdict:
        same = "same person" if verdict["same_person"] else "another person"
        parts.append(f"{same} ({verdict['distance']:.2f})")
    if "estimated_age" in verdict:
        parts.append(f"looks {verdict['estimated_age']:.0f}")
    return " · ".join(parts)


# --------------------------------------------------------------------------- page


def unopened(preprocess):
    """An image input's preprocessing that hands the uploaded file's path over unopened.

    Gradio's own opens the file with Pillow first, and a bad file then fails with a generic
    error before our checks and messages (bytes, pixels, not an image) run. An instance
    attribute, not a subclass: Gradio writes a .pyi file beside any module that subclasses a
    component."""

    def passthrough(payload):
        if payload is None or (payload.url or "").startswith("data:"):
            return preprocess(payload)
        return payload.path

    return passthrough


def build_page(app: AgingApp, model_name: str):
    """The Gradio Blocks of the page; its one endpoint is ``/age``."""
    import gradio as gr

    labels = list(app.models.bins.labels)
    methods = list(app.methods)
    with gr.Blocks(title="age-cgan: age a face", analytics_enabled=False,
                   delete_cache=(60, KEEP_SECONDS)) as page:
        gr.Markdown(f"## Age a face\nModel: `{model_name}` ({len(labels)} age categories, "
                    f"{app.models.image_size} px faces). Nothing you upload is kept after your "
                    "request.")
        with gr.Row():
            with gr.Column(scale=1):
                photo = gr.Image(type="filepath", image_mode=None, label="Photo",
                                 sources=["upload", "webcam"], elem_id="photo")
                photo.preprocess = unopened(photo.preprocess)
                ages = gr.CheckboxGroup(labels, value=labels, label="Target ages",
                                        elem_id="ages")
                method = gr.Radio(methods, value=methods[0], label="Method (per photo)",
                                  info="none: the encoder alone (fastest); the others fit "
                                  "the model to this face first (slower, closer to it)",
                                  elem_id="method")
                face = gr.Dropdown([("face 1", 0)], value=0, label="Face", visible=False,
                                   elem_id="face")
                button = gr.Button("Age this face", variant="primary", elem_id="run")
                found = gr.Gallery(label="Faces in the photo (largest first)", visible=False,
                                   columns=6, height=120, elem_id="found", format="png")
            with gr.Column(scale=2):
                message = gr.Markdown(elem_id="message")
                grid = gr.Image(label="input | reconstruction | each age", type="numpy",
                                interactive=False, elem_id="grid", format="png")
                aged = gr.Gallery(label="Aged faces", columns=6, elem_id="aged", format="png")
                download = gr.File(label="Download (zip: grid, each face, result.json)",
                                   elem_id="download")
        session = gr.State({}, time_to_live=KEEP_SECONDS)

        def run(photo_path, chosen_ages, chosen_method, face_index, state):
            result = app.age(photo_path, chosen_ages, chosen_method, face_index, state)
            faces = result.get("faces", [])
            choices = [(f"face {i + 1}", i) for i in range(max(1, len(faces)))]
            return (result["message"], result.get("grid"), result.get("aged", []),
                    result.get("download"),
                    gr.update(choices=choices, value=result.get("face", 0),
                              visible=len(faces) > 1),
                    gr.update(value=faces or None, visible=len(faces) > 1), state)

        def new_photo():
            return gr.update(choices=[("face 1", 0)], value=0, visible=False), \
                gr.update(value=None, visible=False), {}

        button.click(run, [photo, ages, method, face, session],
                     [message, grid, aged, download, face, found, session], api_name="age")
        photo.change(new_photo, None, [face, found, session], api_name=False)
    return page


# --------------------------------------------------------------------------- command line


def parser() -> argparse.ArgumentParser:
    from age_cgan.cli import HelpFormatter, add_verbose

    p = argparse.ArgumentParser(
        prog=PROG, formatter_class=HelpFormatter,
        description="A local web page that ages the face in a photo with a trained Age-cGAN "
        "(the shipped model unless --run or --model is given).")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--run", help="a run folder written by train.py, instead of the "
                       "shipped model")
    which.add_argument("--model", help="a packaged model folder (config.json, models/*.keras, "
                       "SHA256SUMS, like age_cgan/pretrained/lite), checked before use "
                       "(default: the shipped one)")
    p.add_argument("--host", default=DEFAULT_HOST, help="address to listen on; 0.0.0.0 serves "
                   "everyone who can reach this machine")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on: the "
                   "page is at http://HOST:PORT/ (1-65535)")
    p.add_argument("--share", action="store_true", help="also open a public link through "
                   "Gradio's share servers (off by default: the page stays on this machine)")
    p.add_argument("--no-judges", dest="judges", action="store_false",
                   help="turn off the judges' verdicts under each aged face (same person? "
                   "estimated age), which the page shows when the [eval] extra is installed; "
                   "starts quicker")
    add_verbose(p)
    return p


def private_temp_dir() -> Path:
    """A fresh folder only this user can read (uploads, results), removed when the app exits."""
    folder = Path(tempfile.mkdtemp(prefix="age-cgan-app-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def serve(args) -> int:
    folder = model_folder(args.run, args.model)
    # Before Gradio is imported: no telemetry, no version check, no hub calls; its uploads and
    # cache go to our private folder.
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["HF_HUB_OFFLINE"] = "1"
    root = private_temp_dir()
    os.environ["GRADIO_TEMP_DIR"] = str(root / "gradio")
    scratch = root / "results"
    scratch.mkdir()
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise AppError('the app needs Gradio: pip install "age-cgan[app]"') from None
    from age_cgan.aging import AgingModels
    from age_cgan.faces import FaceDetector

    models = AgingModels.from_run(folder)
    verifier, estimator = load_judges(args.judges)
    app = AgingApp(models, FaceDetector(), scratch, (root / "gradio").resolve(),
                   verifier, estimator)
    page = build_page(app, folder.name)
    page.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    if args.host != DEFAULT_HOST:
        print(f"{PROG}: warning: listening on {args.host}: anyone who can reach this machine "
              f"on port {args.port} can use the page", file=sys.stderr)
    print(f"{PROG}: serving {folder} (judges: {'on' if app.judged else 'off'})", file=sys.stderr)
    # SIGTERM (a service manager, a test) stops the server like Ctrl-C does, so the private
    # folder is removed on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        # quiet: Gradio's own lines name its launch() arguments ("set `share=True` in
        # `launch()`"); launch_lines says the same with this command's flags.
        page.launch(server_name=args.host, server_port=args.port, share=args.share,
                    max_file_size=MAX_UPLOAD_BYTES, ssr_mode=False, show_error=False,
                    inbrowser=False, quiet=True, prevent_thread_lock=True)
        for line in launch_lines(page.local_url, args.share, page.share_url):
            print(f"{PROG}: {line}", file=sys.stderr)
        page.block_thread()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def launch_lines(local_url: str, share: bool, share_url: str | None) -> list[str]:
    """What the app says once the page is up: where it is, and the public link (or --share)."""
    lines = [f"the page is at {local_url} (Ctrl-C stops it)"]
    if share_url:
        lines.append(f"public link: {share_url} (anyone who has it can use the page while this "
                     "runs; it expires within a week)")
    elif share:
        lines.append("no public link could be made (Gradio says why above); the page is at "
                     "the address above only")
    else:
        lines.append("for a public link through Gradio's share servers, start it with --share")
    return lines


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if not 0 < args.port < 65536:
        parser().error("--port must be 1-65535")
    from age_cgan.cli.words import cli_message

    try:
        return serve(args)
    except AgeCganError as error:  # AppError, RunFolderError, ...: worded as this CLI's flags
        print(f"{PROG}: error: {cli_message(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def console() -> None:
    """The console script and ``python -m age_cgan.app``: TensorFlow's C++ start-up lines
    filtered unless --verbose, as infer.py's (see age_cgan/cli/quiet.py)."""
    from age_cgan.cli.quiet import run

    run(main)


if __name__ == "__main__":
    console()
