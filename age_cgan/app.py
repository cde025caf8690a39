"""``age-cgan-app`` / ``python -m age_cgan.app``: a local web page that ages the face in a photo.

Upload a photo (or take one with the webcam), choose the target ages and the per-photo method,
and get the grid ``input | own age | each age``, each aged face as its own image (with the
judges' verdict when the ``[eval]`` extra is installed), and a zip of it all to download. A
group photo lists its faces, largest first; pick one and press the button again. The handler
(upload checks, faces, aging by the model's default method, judging, the download) is
``age_cgan.app_handler``; this module builds the page and serves it. Needs the optional extra:
``pip install "age-cgan[app]"`` (Gradio).

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
* the uploaded photo is deleted when its request ends: only its face crops stay, in the
  server's memory for that browser session (so other ages or faces need no new upload), for at
  most ``KEEP_SECONDS``. Results live in a private temporary folder (mode 0700) until Gradio's
  cache clean-up (every minute, files older than ``KEEP_SECONDS``) or the app's exit, which
  removes the folder.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from age_cgan.app_handler import (KEEP_SECONDS, MAX_UPLOAD_BYTES, PROG, QUEUE_SIZE, AgingApp,
                                  AppError, load_judges, model_folder, unavailable_methods)
from age_cgan.errors import AgeCganError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
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


def logged(preprocess):
    """A choice input's preprocessing whose refusal of a value (one not among its choices, sent
    through the API) the server logs in one line, as the client reads it, without Gradio's
    traceback: a wrong value is the client's mistake, not the server's."""

    def checked(payload):
        import gradio as gr

        try:
            return preprocess(payload)
        except gr.Error as error:
            print(f"{PROG}: refused a request: {error.message}", file=sys.stderr)
            error.print_exception = False
            raise

    return checked


def face_choices(faces: int) -> list[tuple[str, str]]:
    """The Face dropdown's choices: ("face 1", "0"), ... (strings: see ``build_page``)."""
    return [(f"face {i + 1}", str(i)) for i in range(max(1, faces))]


def build_page(app: AgingApp, model_name: str):
    """The Gradio Blocks of the page; its one endpoint is ``/age``."""
    import gradio as gr

    from age_cgan.cli.explain import method_help

    labels = list(app.models.bins.labels)
    methods = list(app.methods)
    missing = unavailable_methods(app.models)
    with gr.Blocks(title="age-cgan: age a face", analytics_enabled=False,
                   delete_cache=(60, KEEP_SECONDS)) as page:
        gr.Markdown(f"## Age a face\nModel: `{model_name}` ({len(labels)} age categories, "
                    f"{app.models.image_size} px faces). Nothing you upload is kept after your "
                    "request." + "".join(f"\n\nNot offered: **{m}**, because {why}."
                                         for m, why in missing.items()), elem_id="intro")
        with gr.Row():
            with gr.Column(scale=1):
                photo = gr.Image(type="filepath", image_mode=None, label="Photo",
                                 sources=["upload", "webcam"], elem_id="photo")
                photo.preprocess = unopened(photo.preprocess)
                ages = gr.CheckboxGroup(labels, value=labels, label="Target ages",
                                        elem_id="ages")
                ages.preprocess = logged(ages.preprocess)
                method = gr.Radio(methods, value=methods[0], label="Method (per photo)",
                                  info=method_help(methods[0], methods, ": ") + ".",
                                  elem_id="method")
                method.preprocess = logged(method.preprocess)
                # string values, and any accepted: what the API advertises ("0") is taken,
                # and a later face of a group photo too (app_handler.face_number)
                face = gr.Dropdown(face_choices(1), value="0", label="Face", visible=False,
                                   elem_id="face", allow_custom_value=True)
                button = gr.Button("Age this face", variant="primary", elem_id="run")
                found = gr.Gallery(label="Faces in the photo (largest first)", visible=False,
                                   columns=6, height=120, elem_id="found", format="png")
            with gr.Column(scale=2):
                message = gr.Markdown(elem_id="message")
                grid = gr.Image(label="input | own age | each age", type="numpy",
                                interactive=False, elem_id="grid", format="png")
                aged = gr.Gallery(label="Aged faces", columns=6, elem_id="aged", format="png")
                download = gr.File(label="Download (zip: grid, each face, result.json)",
                                   elem_id="download")
        session = gr.State({}, time_to_live=KEEP_SECONDS)

        def run(photo_path, chosen_ages, chosen_method, face_index, state):
            result = app.age(photo_path, chosen_ages, chosen_method, face_index, state)
            faces = result.get("faces", [])
            return (result["message"], result.get("grid"), result.get("aged", []),
                    result.get("download"),
                    gr.update(choices=face_choices(len(faces)),
                              value=str(result.get("face", 0)), visible=len(faces) > 1),
                    gr.update(value=faces or None, visible=len(faces) > 1), state)

        def new_photo():
            return gr.update(choices=face_choices(1), value="0", visible=False), \
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
        description="A local web page that ages the face in a photo: by default with the "
        "shipped model and its default method (prototype: the photo moved by averages of real "
        "faces of each age); "
        "--run or --model serves another model. The page offers the methods that model can "
        "run, its default first, and says why any other is not offered.")
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
    note = models.default_method()[1]
    if note:  # a model without the aging network: the page starts on its Age-cGAN method
        print(f"{PROG}: {note}", file=sys.stderr)
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
