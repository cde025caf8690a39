"""``python infer.py PHOTO [PHOTO|DIR ...]``: each face in the photos at every age category.

For each face: one PNG grid ``input crop | the face at its own age | each age``, labelled with the age
ranges (optionally the separate images too, and one JSON line of paths and numbers). A folder of
photos keeps going past a bad file and lists the failures at the end.

Exit status: 0 every photo gave its grids; 1 some photo gave none (the others are written);
2 nothing could start (arguments, run folder, networks).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from age_cgan.ages import parse_ages
from age_cgan.cli import HelpFormatter
from age_cgan.cli.explain import method_help, own_age_line, strength_help
from age_cgan.cli.words import cli_message
from age_cgan.errors import AgeCganError
from age_cgan.files import WriteFailed, writing

PROG = "infer.py"
#: A grid --out file's suffixes (``visualize.FORMATS``); any other image suffix is refused.
GRID_SUFFIXES = (".png", ".jpg", ".jpeg")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Age the faces in photos: detect each face, crop it like the training "
        "faces, guess the person's age category, and show the face at every age category as "
        "one PNG grid per face. The shipped model's default method is prototype: the photo "
        "itself moved, at its own resolution, by the difference between averages of real faces "
        "of its own age and of each target age; the aging network (network) and Age-cGAN's "
        "methods (z0 = E(face), z*_pixel, z*_IP, G's difference) stay selectable with "
        "--method.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("photos", nargs="+", metavar="PHOTO|DIR",
                   help="photo files or folders of photos")
    p.add_argument("--run", default=None, help="a run folder written by train.py (default: "
                   "the model shipped in the package, unless --model or --encoder and "
                   "--generator are given)")
    p.add_argument("--model", default=None, help="a packaged model folder (config.json, "
                   "models/*.keras, SHA256SUMS, as age_cgan/pretrained/lite), checked against "
                   "its checksums (default: the shipped one)")
    p.add_argument("--encoder", help="an encoder .keras file (instead of the run's)")
    p.add_argument("--generator", help="a generator .keras file (instead of the run's)")
    p.add_argument("--face-recognizer", help="a face recogniser .keras file for --method "
                   "identity (instead of the run's)")
    p.add_argument("--age-estimator", help="an age estimator .keras file (instead of the "
                   "run's): guesses the person's age category")
    p.add_argument("--prototypes", metavar="FILE.npz", help="an age prototype file (instead of "
                   "the model's prototypes.npz; python -m age_cgan.prototypes build makes one)")
    p.add_argument("--aging-network", help="an aging network .keras file (instead of the "
                   "run's), for --method network")
    p.add_argument("--age-bins", help="age categories of the generator when it has no run "
                   "folder, e.g. '0-18,19-29,30-39,40-49,50-59,60+' (default: the run's)")
    p.add_argument("--out", help="a .png or .jpg file, written in that format (one face; more "
                   "faces go beside it as NAME_PHOTO_aged.png), or a folder for one grid per "
                   "face: any name without an image suffix (default: aged/ in the current "
                   "folder for the shipped model, a --model folder or --encoder/--generator "
                   "files; RUN/infer/ for a --run RUN). A file infer.py did not write is "
                   "never replaced without --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace files at the output "
                   "paths that infer.py did not write (default: refuse; its own earlier "
                   "grids are replaced)")
    from age_cgan.aging.methods import METHODS
    from age_cgan.pretrained import shipped_defaults

    default = shipped_defaults().get("method", "network")
    p.add_argument("--method", "--optimize", dest="optimize", default=None,
                   choices=list(METHODS),
                   help=f"the per-photo method (default: the model's own, {default} for the "
                   "shipped model; a model that lacks a method's networks refuses it and "
                   f"names them): {method_help(default)}")
    p.add_argument("--strength", type=float, default=None, help=strength_help())
    p.add_argument("--opt-steps", type=int, default=None, help="Adam steps on z (default: "
                   "100 for pixel and difference, 50 for identity)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate on z "
                   "(default: 0.02)")
    p.add_argument("--source-age", type=float, default=None, help="the person's age in the "
                   "photo, in years (0-100): the category the face is aged from (default: the age "
                   "estimator's guess, printed with its confidence; a model without one takes "
                   "the category whose reconstruction is nearest to the face)")
    p.add_argument("--ages", default="all", help="'all', or a comma list of categories "
                   "('19-29,60+') or ages in years ('25,70')")
    p.add_argument("--all-faces", action="store_true",
                   help="every face in a photo (default: the largest only)")
    p.add_argument("--separate", action="store_true",
                   help="also write each image of a grid as its own PNG in a folder beside it")
    p.add_argument("--json", metavar="FILE", help="append one JSON line per face to FILE "
                   "('-' for standard output)")
    p.add_argument("--score", action="store_true", help="judge each aged face as evaluate.py "
                   "does (needs pip install \"age-cgan[eval]\"): dlib distance to the input "
                   "crop, same person (< 0.6) yes/no, estimated age; printed, and in --json")
    p.add_argument("--zoom", type=int, default=2, help="enlarge the grid's images this many "
                   "times (1 = the model's size)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="turn off the progress bar of each face's latent optimisation")
    p.add_argument("--verbose", action="store_true", help="keep the backends' own log lines "
                   "(TensorFlow's C++ notices; also AGE_CGAN_VERBOSE=1)")
    return p


class Outputs:
    """Where each face's grid goes: a .png file for a single face, else names in a folder."""

    def __init__(self, out: Path, single: bool):
        self.is_file = out.suffix.lower() in GRID_SUFFIXES
        self.suffix = out.suffix if self.is_file else ".png"
        self.out, self.single, self.used = out, single, set()

    def grid_path(self, photo: Path, face_index: int, faces: int) -> Path:
        if self.is_file and self.single and faces == 1:
            path = self.out
        else:
            stem = photo.stem + (f"_face{face_index + 1}" if faces > 1 else "")
            folder = self.out.parent if self.is_file else self.out
            prefix = f"{self.out.stem}_" if self.is_file else ""
            path = folder / f"{prefix}{stem}_aged{self.suffix}"
        base, k = path, 2
        while path in self.used:  # two photos with the same name from different folders
            path = base.with_name(f"{base.stem}_{k}{base.suffix}")
            k += 1
        self.used.add(path)
        return path


class MethodUnavailable(AgeCganError, ValueError):
    """The asked method needs a network the model lacks (``AgingModels.unavailable_reason``)."""


def _given_files(args) -> set:
    """The packaged model's files this command takes from elsewhere (--prototypes, ...)."""
    networks = ("encoder", "generator", "face_recognizer", "age_estimator", "aging_network")
    given = {f"models/{n}.keras" for n in networks if getattr(args, n)}
    return given | ({"prototypes.npz"} if args.prototypes else set())


def _load(args):
    """(models, categories, detector) or a RunFolderError / ValueError / ImportError to report."""
    from age_cgan.aging import AgingModels
    from age_cgan.faces import FaceDetector

    from age_cgan.pretrained import verified_run

    args.judges = _score_judges() if args.score else None  # a missing extra fails first
    run = args.run
    if args.model is not None or (run is None and not (args.encoder and args.generator)):
        run = verified_run(args.model, _given_files(args))  # the shipped one unless --model
    models = AgingModels.from_run(run, encoder=args.encoder, generator=args.generator,
                                  face_recognizer=args.face_recognizer, age_bins=args.age_bins,
                                  age_estimator=args.age_estimator,
                                  aging_network=args.aging_network,
                                  prototypes=args.prototypes)
    for note in models.notes:
        print(f"{PROG}: {note}", file=sys.stderr)
    if args.optimize is None:
        args.optimize, note = models.default_method()
        if note:
            print(f"{PROG}: {note} (--method to choose another)", file=sys.stderr)
    reason = models.unavailable_reason(args.optimize)
    if reason:
        raise MethodUnavailable(f"{reason}, or choose another --method: this model runs "
                                f"{', '.join(models.available_methods())}")
    if args.strength is None:
        args.strength = models.default_strength(args.optimize)
    categories = parse_ages(args.ages, models.bins)
    if args.source_age is not None and models.bins.category(args.source_age) < 0:
        raise ValueError(f"--source-age {args.source_age:g} is in none of this model's age "
                         f"categories ({models.bins.spec})")
    return models, categories, FaceDetector()


def _age_photo(photo, models, detector, categories, outputs, args, log) -> int:
    """Write the grids of one photo's faces; returns how many (raises PhotoError)."""
    from age_cgan.aging import LEARNING_RATE
    from age_cgan.aging.grid import write_aged
    from age_cgan.faces import find_faces

    start = time.perf_counter()
    faces = find_faces(photo, models.image_size, detector)
    if len(faces) > 1 and not args.all_faces:
        print(f"{PROG}: {photo}: {len(faces)} faces found, using the largest "
              "(--all-faces for every face)", file=sys.stderr)
        faces = faces[:1]
    for index, face in enumerate(faces):
        aged = models.age(face.image, args.optimize, args.opt_steps, args.source_age,
                          categories, args.lr or LEARNING_RATE, args.progress, args.strength,
                          detail=face.detail)
        paths = write_aged(aged, outputs.grid_path(photo, index, len(faces)), args.zoom,
                           args.separate, args.overwrite)
        record = {"photo": str(photo), "face": index + 1, "faces": len(faces),
                  "box": face.box.as_list(), "crop_box": face.crop_box.as_list(),
                  "detector_score": round(face.score, 3), **paths, **aged.record(),
                  "seconds_total": round(time.perf_counter() - start, 3)}
        if args.judges:
            record["score"] = _score(aged, args.judges, models.bins)
        moved = (f"  ({args.optimize}: loss {record['loss_start']:.4f} -> "
                 f"{record['loss_end']:.4f}, z moved {record['z0_distance']:.3f})"
                 if aged.loss_history else "")
        out = sys.stderr if log is sys.stdout else sys.stdout
        print(f"{photo} face {index + 1}/{len(faces)} -> {paths['grid']}{moved}", file=out)
        if aged.source_confidence is not None:
            print(f"  {own_age_line(aged)}", file=out)
        for verdict in record.get("score", []):
            print(f"  {verdict['age']}: dlib distance {verdict['distance']:.3f}, same person: "
                  f"{'yes' if verdict['same_person'] else 'no'}; estimated age "
                  f"{verdict['estimated_age']:.0f} ({'in' if verdict['in_category'] else 'not in'}"
                  f" {verdict['age']})", file=sys.stderr if log is sys.stdout else sys.stdout)
        if log:
            with writing(args.json, "the --json log"):
                log.write(json.dumps(record) + "\n")
                log.flush()
    return len(faces)


def _score_judges():
    """(dlib's verifier, the age estimator) for --score; JudgeUnavailable (an ImportError)
    names the extra to install."""
    from age_cgan.judges import AgeEstimator, FaceVerifier

    return FaceVerifier(), AgeEstimator()


def _score(aged, judges, bins) -> list[dict]:
    """The judges' verdict on each aged face of one input (``judges.judge_aged``: distance to
    the input crop, same person, estimated age), with its category and whether the estimate
    falls in it."""
    from age_cgan.judges import judge_aged

    verdicts = judge_aged(aged.face, aged.aged, *judges)
    for verdict, label, category in zip(verdicts, aged.labels, aged.categories):
        verdict["age"] = label
        verdict["in_category"] = bool(bins.category(verdict["estimated_age"]) == category)
    return verdicts


def _summary(written: int, photos: list, failures: list) -> int:
    print(f"{PROG}: wrote {written} grid{'s' * (written != 1)} for {len(photos)} "
          f"photo{'s' * (len(photos) != 1)}", file=sys.stderr)
    if not failures:
        return 0
    print(f"{PROG}: {len(failures)} could not be used:", file=sys.stderr)
    for path, reason in failures:
        print(f"  {path}: {reason}", file=sys.stderr)
    return 1


def _default_out(args) -> Path:
    """RUN/infer for a training run; ./aged for a packaged model (the shipped one, --model)
    or network files (never inside the package): known before any network loads."""
    from age_cgan.pretrained import CHECKSUMS

    if args.run is None or args.model is not None or (Path(args.run) / CHECKSUMS).is_file():
        return Path("aged")
    return Path(args.run) / "infer"


def _settings_problem(args) -> str | None:
    """Why the settings cannot work, checked before the model loads (seconds), or None."""
    from age_cgan.aging.methods import strength_problem
    from age_cgan.ages import MAX_AGE

    if args.opt_steps is not None and args.opt_steps < 0:
        return "--opt-steps must be >= 0"
    if args.zoom < 1:
        return "--zoom must be >= 1"
    problem = strength_problem(args.strength)
    if problem:
        return f"--strength {problem}"
    if args.source_age is not None and not 0 <= args.source_age <= MAX_AGE:
        return (f"--source-age must be the person's age in years, from 0 to {MAX_AGE}, got "
                f"{args.source_age:g}")
    return None


GRID_NAME = re.compile(r"_aged(_\d+)?\.(png|jpe?g)$")  # what Outputs.grid_path names a grid


def _check_outputs(outputs: Outputs, photos: list, named, json_path,
                   overwrite: bool = False) -> tuple[list, str | None]:
    """(the photos to age, why to stop before any work or None).

    A grid never replaces a photo (``infer.py me.png --out me.png``), nor without
    ``overwrite`` any file infer.py did not write; the grids of an earlier run in a folder that
    is both read and written (``--out`` = the photos' folder) are not aged again
    (``x_aged_aged.png``) unless named one by one; every output can be written.
    """
    from age_cgan.aging.grid import WouldReplace, check_replace
    from age_cgan.data.readers import IMAGE_SUFFIXES
    from age_cgan.files import writable_problem

    suffix = outputs.out.suffix.lower()
    if suffix in IMAGE_SUFFIXES and not outputs.is_file:
        return photos, (f"--out {outputs.out}: a grid is written as a .png or .jpg file; name "
                        "one of those, or a folder (a name without an image suffix)")
    folder = (outputs.out.parent if outputs.is_file else outputs.out).resolve()
    named = {Path(p).resolve() for p in named}
    photos = [p for p in photos if p.resolve() in named or p.resolve().parent != folder
              or not GRID_NAME.search(p.name)]
    if outputs.out.resolve() in {p.resolve() for p in photos}:  # me.png, or me.jpg
        return photos, (f"--out {outputs.out} is a photo this command reads: its grid would "
                        "replace it. Choose another --out (a .png file or a folder).")
    problem = writable_problem(outputs.out, folder=not outputs.is_file)
    if problem is None and json_path not in (None, "-"):
        problem = writable_problem(json_path)
    if problem:
        return photos, f"cannot write the output: {problem}"
    planned = Outputs(outputs.out, outputs.single)  # each photo's grid when it has one face
    try:
        for photo in photos:
            check_replace(planned.grid_path(photo, 0, 1), overwrite)
    except WouldReplace as error:
        return photos, cli_message(error)
    return photos, None if photos else "no photos to read (only grids this writes)"


def _refuse(problem: str) -> int:
    print(f"{PROG}: error: {problem}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    problem = _settings_problem(args)
    if problem:  # one line, before the model loads
        return _refuse(problem)
    from age_cgan.aging.grid import WouldReplace
    from age_cgan.faces import PhotoError, list_photos

    photos, failures = list_photos(args.photos)
    if not photos:
        for path, reason in failures:
            print(f"{PROG}: error: {path}: {reason}", file=sys.stderr)
        print(f"{PROG}: error: no photos to read", file=sys.stderr)
        return 2
    outputs = Outputs(Path(args.out or _default_out(args)), single=len(photos) == 1)
    if args.out is not None:  # a given --out is checked before the model loads (seconds)
        photos, problem = _check_outputs(outputs, photos, args.photos, args.json,
                                         args.overwrite)
        if problem:
            return _refuse(problem)
    try:
        models, categories, detector = _load(args)
    except (AgeCganError, ValueError, ImportError, RuntimeError) as error:  # RunFolderError, ...
        return _refuse(cli_message(error))
    if args.out is None:  # the default (RUN/infer) once the run folder is known to be one
        photos, problem = _check_outputs(outputs, photos, args.photos, args.json,
                                         args.overwrite)
        if problem:
            return _refuse(problem)
    log = None
    if args.json:
        if args.json != "-":
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        log = sys.stdout if args.json == "-" else open(args.json, "a", encoding="utf-8")
    written = 0
    try:
        for photo in photos:
            try:
                written += _age_photo(photo, models, detector, categories, outputs, args, log)
            except PhotoError as error:
                message = cli_message(error)
                print(f"{PROG}: {message}", file=sys.stderr)
                failures.append((str(photo), message.removeprefix(f"{photo}: ")))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted after {written} faces", file=sys.stderr)
        return 130
    except WriteFailed as error:  # a full disk, ...: one line, the grids already written stay
        kept = f"the grids of the {written} faces aged before it are kept" if written else None
        print(f"{PROG}: error: {cli_message(error.but(kept=kept))}", file=sys.stderr)
        return 1
    except WouldReplace as error:  # a second face's grid name, taken by another file
        kept = f"; the grids of the {written} faces aged before it are kept" if written else ""
        print(f"{PROG}: error: {cli_message(error)}{kept}", file=sys.stderr)
        return 1
    finally:
        if log not in (None, sys.stdout):
            log.close()
    return _summary(written, photos, failures)


def console() -> None:
    """The console script and the top-level script: backend log noise filtered unless
    --verbose (see age_cgan/cli/quiet.py)."""
    from age_cgan.cli.quiet import run

    run(main)
