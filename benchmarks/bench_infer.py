"""Benchmark infer (issue 5's speed targets; not a timed test).

    python benchmarks/bench_infer.py [--run DIR] [--photos DIR] [--limit N] [--identity-faces N]

Without --run, untrained networks of the paper's size (64x64, z 100, six ages, FR =
InceptionResNetV2 at 160 px) are built: speed does not depend on training. Photos default to
../shared/data/photos next to this checkout, else the bundled portrait (age_cgan/examples).
Measures, after loading: detection + crop per photo, encode + reconstruction + every age per
face, the aging network's method per face (the own-age guess, six ages, the change added at the
crop's own size) when the model has one, and per-face latent optimisation (identity and pixel,
default steps), with the first call (tracing/compiling) apart.
Targets: CPU: detection + encode + 6 ages < 2 s per photo; identity optimisation < 30 s per
face. GPU (e.g. KERAS_BACKEND=jax on a CUDA machine): identity optimisation < 2 s per face.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _photos(folder, limit):
    from age_cgan.faces import list_photos

    candidates = [Path(folder)] if folder else [REPO.parent / "shared/data/photos",
                                                REPO / "age_cgan/examples"]
    for candidate in candidates:
        if candidate.is_dir():
            photos, _ = list_photos([candidate])
            if photos:
                return photos[:limit]
    raise SystemExit(f"no photos found in {candidates}")


def _models(run):
    from age_cgan.aging import AgingModels
    from age_cgan.ages import PAPER_BINS
    from age_cgan.networks import build_encoder, build_face_recognizer, build_generator

    if run:
        return AgingModels.from_run(run)
    return AgingModels(build_encoder(), build_generator(), PAPER_BINS,
                       face_recognizer=build_face_recognizer(weights=None))


def _ms(seconds):
    return round(1000 * seconds, 1)


def parser() -> argparse.ArgumentParser:
    from age_cgan.helpformat import DocstringHelpFormatter

    p = argparse.ArgumentParser(prog="benchmarks/bench_infer.py", description=__doc__,
                                formatter_class=DocstringHelpFormatter)
    p.add_argument("--run", help="a trained run folder (default: untrained networks)")
    p.add_argument("--photos", help="a folder of photos (default: ../shared/data/photos, else "
                   "the bundled portrait)")
    p.add_argument("--limit", type=int, default=40, help="photos to time")
    p.add_argument("--identity-faces", type=int, default=2,
                   help="faces to time identity optimisation on (after a first one)")
    p.add_argument("--steps", type=int, default=None, help="optimisation steps "
                   "(default: the package's defaults)")
    return p


def main(argv=None):
    args = parser().parse_args(argv)

    import keras

    from age_cgan.aging import DEFAULT_STEPS
    from age_cgan.faces import FaceDetector, NoFaceFound, find_faces

    photos = _photos(args.photos, args.limit)
    start = time.perf_counter()
    models = _models(args.run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models.face_recognizer  # noqa: B018 (load or build it now)
    detector = FaceDetector()
    load_s = time.perf_counter() - start
    models.age(find_faces(photos[0], models.image_size, detector)[0].image, progress=False)

    detect, age, total, faces, misses, network = [], [], [], [], 0, []
    if models.aging_network is not None:  # trace the network method once, apart
        first = find_faces(photos[0], models.image_size, detector)[0]
        models.age(first.image, "network", progress=False, detail=first.detail)
    for photo in photos:
        t0 = time.perf_counter()
        try:
            found = find_faces(photo, models.image_size, detector, all_faces=False)[0]
        except NoFaceFound:
            misses += 1
            continue
        face = found.image
        t1 = time.perf_counter()
        models.age(face, "none", progress=False)
        t2 = time.perf_counter()
        detect.append(t1 - t0)
        age.append(t2 - t1)
        total.append(t2 - t0)
        faces.append(face)
        if models.aging_network is not None:  # the default: guess, change, full resolution
            t3 = time.perf_counter()
            models.age(face, "network", progress=False, detail=found.detail)
            network.append(time.perf_counter() - t3)

    result = {
        "backend": keras.backend.backend(),
        "devices": _devices(),
        "run": args.run or "untrained, paper size",
        "photos": len(photos),
        "faces_found": len(faces),
        "load_s": round(load_s, 2),
        "detect_crop_ms_median": _ms(statistics.median(detect)),
        "encode_recon_6_ages_ms_median": _ms(statistics.median(age)),
        "photo_without_optimisation_ms_median": _ms(statistics.median(total)),
        "photo_without_optimisation_ms_max": _ms(max(total)),
    }
    if network:
        result["network_method_6_ages_full_resolution_ms_median"] = _ms(
            statistics.median(network))
    for mode in ("pixel", "identity"):
        steps = DEFAULT_STEPS[mode] if args.steps is None else args.steps
        t0 = time.perf_counter()
        models.age(faces[0], mode, steps=steps, progress=False)
        first = time.perf_counter() - t0
        times = []
        for face in faces[1:1 + args.identity_faces]:
            t0 = time.perf_counter()
            aged = models.age(face, mode, steps=steps, progress=False)
            times.append(time.perf_counter() - t0)
        result[f"{mode}_steps"] = steps
        result[f"{mode}_first_face_s"] = round(first, 2)
        result[f"{mode}_per_face_s"] = round(statistics.mean(times), 2) if times else None
        result[f"{mode}_ms_per_step"] = round(1000 * statistics.mean(times) / (steps + 1), 1) \
            if times else None
        result[f"{mode}_loss_start_end"] = [round(aged.loss_history[0], 4),
                                            round(min(aged.loss_history), 4)]
    print(json.dumps(result, indent=2))


def _devices():
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return [str(d) for d in jax.devices()]
    import tensorflow as tf

    return [d.name for d in tf.config.list_logical_devices()]


if __name__ == "__main__":
    main()
