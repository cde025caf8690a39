"""The web page's handler: an uploaded photo -> its faces -> a face aged by a method, judged.

No Gradio import here, so it is testable and measurable without a server (``age_cgan.app``
builds the page and serves it). Uploads are checked by their header before decoding
(``check_upload``); detection and cropping are ``age_cgan.faces``', the grid and the age
parser infer.py's too (``age_cgan.aging.grid``, ``age_cgan.ages``), no command line's; aging is
``AgingModels`` (one call site, ``age_face``), by the same default method as infer.py.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
import uuid
import zipfile
from pathlib import Path

from age_cgan.errors import AgeCganError, raw_message, render, setting
from age_cgan.files import WriteFailed, write_text, writing

PROG = "age-cgan-app"
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
    """The per-photo methods the model can run, as ``age_cgan.aging`` names them, its default
    first (the one ``infer.py`` uses too): ``AgingModels.available_methods``."""
    return models.available_methods()


def unavailable_methods(models) -> dict[str, str]:
    """Method -> why this model cannot run it (for the page, worded without flags)."""
    from age_cgan.aging import METHODS

    reasons = {m: models.unavailable_reason(m) for m in METHODS}
    return {m: render(reason, page_words) for m, reason in reasons.items() if reason}


def face_number(face_index, faces: int) -> int:
    """The face a request names (an int, or the string the page's API advertises), within
    the faces found; anything else is the first (largest) face."""
    try:
        index = int(face_index or 0)
    except (TypeError, ValueError):
        index = 0
    return min(max(index, 0), faces - 1)


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
        raise AppError(f"{raw_message(error)}; or serve another model: "
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
        self._read = {}  # upload path -> (time, crops): uploads are stored by content
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
        read = self._read.get(key)
        if not path.is_file() and read and time.time() - read[0] < KEEP_SECONDS:
            # Gradio stores uploads by content: another user's upload of the same photo had
            # this path, and its request read (and deleted) it; the crops are the same
            session.clear()
            session.update(photo=key, faces=read[1], time=time.time())
            return read[1]
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
        self._read[key] = (time.time(), faces)
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
        from age_cgan.ages import parse_ages
        from age_cgan.faces import PhotoError

        session = {} if session is None else session
        if not photo:
            return {"message": "Upload a photo (or take one with the webcam) first."}
        if method not in self.methods:
            why = unavailable_methods(self.models).get(method)
            why = f"this model cannot run it: {why}" if why else "there is no such method"
            return {"message": f"Method {method!r} is not offered: {why}. Choose one of "
                    f"{', '.join(self.methods)}."}
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
            index = face_number(face_index, len(faces))
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
        from age_cgan.aging.grid import aged_grid, write_aged

        zoom = max(1, round(DISPLAY_SIDE / aged.face.shape[0]))
        grid, images, _ = aged_grid(aged, zoom)
        captions = [caption(label, verdict) for label, verdict in zip(aged.labels, verdicts)]
        record = {"face": index + 1, "faces": len(faces), **aged.record(),
                  "ages": [{"category": label, **verdict}
                           for label, verdict in zip(aged.labels, verdicts)]}
        folder = self.scratch / uuid.uuid4().hex
        write_aged(aged, folder / "aged" / "grid.png", zoom, separate=True)
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
        if aged.landmarks == "mean shape":
            message += (" The face's own landmarks could not be read (dlib's landmark model is "
                        "missing), so the ages are placed where an average face's features are.")
        if len(faces) > 1:
            message += " Pick another face under *Face* and press the button again."
        if not self.judged:
            message += ' (Install `age-cgan[eval]` for the judges\' verdicts.)'
        return {"message": message, "faces": [f.image for f in faces], "face": index,
                "grid": grid, "aged": list(zip(images[2:], captions)), "download": str(download),
                "record": record}

    def _prune(self) -> None:
        """Forget crops and delete results older than KEEP_SECONDS."""
        limit = time.time() - KEEP_SECONDS
        self._read = {k: v for k, v in self._read.items() if v[0] >= limit}
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
