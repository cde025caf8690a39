"""Benchmark the web page's request: seconds per photo for each per-photo method (not a test).

    python benchmarks/bench_app.py [--run DIR] [--photo FILE] [--repeat N] [--no-judges]

Times ``age_cgan.app.AgingApp.age`` (what the page's button runs, without the HTTP and the
browser): upload checks, detection and crop, aging to every category by the method, the
judges' verdicts when installed, and the grid, images and zip for download. Each method is
called once first (tracing/compiling, reported apart), then ``--repeat`` times on a fresh
upload (no cached faces). Without --run: the shipped model when this install has it, else
untrained networks of the lite architecture (64 px): speed does not depend on training.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _models(run):
    from age_cgan import app
    from age_cgan.aging import AgingModels
    from age_cgan.ages import PAPER_BINS
    from age_cgan.networks import (build_age_estimator, build_aging_network, build_encoder,
                                   build_face_recognizer, build_generator)

    try:
        folder = app.model_folder(run)
    except app.AppError:
        folder = None
    if folder is not None:
        return AgingModels.from_run(folder), str(folder)
    config = {"arch": "lite", "image_size": 64, "z_dim": 100, "age_bins": PAPER_BINS.spec}
    models = AgingModels(build_encoder(64, 100, arch="lite"),
                         build_generator(100, PAPER_BINS.num_ages, 64, arch="lite"), PAPER_BINS,
                         config, face_recognizer=build_face_recognizer(64, None, 160, arch="lite"),
                         age_estimator=build_age_estimator(64, PAPER_BINS.num_ages, "lite"),
                         aging_network=build_aging_network(64, PAPER_BINS.num_ages, "lite"))
    return models, "untrained lite networks (64 px)"


def parser() -> argparse.ArgumentParser:
    from age_cgan.helpformat import DocstringHelpFormatter

    p = argparse.ArgumentParser(prog="benchmarks/bench_app.py", description=__doc__,
                                formatter_class=DocstringHelpFormatter)
    p.add_argument("--run", help="a run or model folder (default: the shipped model, else "
                   "untrained lite networks)")
    p.add_argument("--photo", default=str(REPO / "age_cgan/examples/astronaut.jpg"),
                   help="the photo each request uploads")
    p.add_argument("--repeat", type=int, default=2,
                   help="timed requests per method, after the first (tracing) one")
    p.add_argument("--no-judges", dest="judges", action="store_false",
                   help="turn off the judges' verdicts in the timed requests (they are timed "
                   "when the [eval] extra is installed)")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    from age_cgan import app
    from age_cgan.faces import FaceDetector

    models, name = _models(args.run)
    verifier, estimator = app.load_judges(args.judges)
    work = Path(tempfile.mkdtemp(prefix="bench-app-"))
    uploads, scratch = work / "uploads", work / "results"
    uploads.mkdir(), scratch.mkdir()
    page = app.AgingApp(models, FaceDetector(), scratch, uploads.resolve(), verifier, estimator)
    report = {"model": name, "judges": page.judged, "photo": args.photo, "methods": {}}
    try:
        for method in page.methods:
            times = []
            for call in range(args.repeat + 1):
                upload = uploads / f"{call}" / Path(args.photo).name
                upload.parent.mkdir()
                shutil.copy(args.photo, upload)
                start = time.perf_counter()
                result = page.age(str(upload), list(models.bins.labels), method, 0, {})
                times.append(time.perf_counter() - start)
                assert "grid" in result, result["message"]
            report["methods"][method] = {"first_s": round(times[0], 2),
                                         "median_s": round(statistics.median(times[1:]), 2)}
            print(method, report["methods"][method], file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
