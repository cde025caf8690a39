"""Benchmark the face data pipeline (issue 3's speed targets; not a timed test).

    python benchmarks/bench_data.py [SOURCE] [--compare-executors]

SOURCE defaults to ../shared/data/utkface64 next to this checkout. Measures, with a fresh
temporary cache: the first preparation (list, decode, write), the reload from cache in this
process and in a fresh interpreter (import included), and milliseconds per sampled batch.
Targets on the 2-core development machine with utkface64 (22,182 faces): first preparation
< 60 s, reload < 3 s, a batch of 128 well under 0.6 s (5% of a ~13 s stage-1 CPU step).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from age_cgan.data import BatchSampler, find_source, load_dataset  # noqa: E402
from age_cgan.data import images as imaging  # noqa: E402

RELOAD = """
import sys, time
t = time.perf_counter()
from age_cgan.data import load_dataset
ds = load_dataset(sys.argv[1], cache_dir=sys.argv[2], progress=False)
assert ds.summary.cache_hit
print(time.perf_counter() - t)
"""


def compare_executors(source, workers):
    listing = find_source(source).read()
    paths = listing.paths()
    out = {}
    for executor in ("thread", "process"):
        start = time.perf_counter()
        imaging.decode_all(paths, 64, workers=workers, progress=False, executor=executor)
        out[f"decode_{executor}_s"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    imaging.decode_all(paths, 64, workers=1, progress=False)
    out["decode_serial_s"] = round(time.perf_counter() - start, 2)
    return out


def parser() -> argparse.ArgumentParser:
    from age_cgan.helpformat import DocstringHelpFormatter

    p = argparse.ArgumentParser(prog="benchmarks/bench_data.py", description=__doc__,
                                formatter_class=DocstringHelpFormatter)
    p.add_argument("source", nargs="?", default=str(REPO.parent / "shared/data/utkface64"),
                   help="a face source, as train.py --data takes")
    p.add_argument("--batch-size", type=int, default=128,  # the book's text
                   help="faces per sampled batch")
    p.add_argument("--batches", type=int, default=300, help="batches sampled and timed")
    p.add_argument("--workers", type=int, default=None,
                   help="decoding threads (default: one per CPU core)")
    p.add_argument("--compare-executors", action="store_true",
                   help="also time thread vs process vs serial decoding")
    return p


def main(argv=None):
    args = parser().parse_args(argv)

    results = {"source": args.source, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="age_cgan_bench_") as cache_dir:
        start = time.perf_counter()
        ds = load_dataset(args.source, cache_dir=cache_dir, workers=args.workers, progress=False)
        results["first_preparation_s"] = round(time.perf_counter() - start, 2)
        results["first_preparation_parts_s"] = {k: round(v, 2)
                                                for k, v in ds.summary.timings.items()}
        results["faces"] = len(ds)

        start = time.perf_counter()
        again = load_dataset(args.source, cache_dir=cache_dir, progress=False)
        results["reload_in_process_s"] = round(time.perf_counter() - start, 2)
        assert again.summary.cache_hit
        env = dict(os.environ, PYTHONPATH=str(REPO))
        start = time.perf_counter()
        inner = subprocess.run([sys.executable, "-c", RELOAD, args.source, cache_dir],
                               check=True, capture_output=True, text=True, env=env)
        results["reload_fresh_process_s"] = round(time.perf_counter() - start, 2)
        results["reload_fresh_process_import_and_load_s"] = round(float(inner.stdout), 2)
        summary = again.summary.format()

    sampler = BatchSampler(ds.images, ds.categories, ds.num_ages, args.batch_size, seed=0,
                           indices=~ds.is_test)
    sampler.next()  # warm-up
    start = time.perf_counter()
    for _ in range(args.batches):
        sampler.next()
    results[f"ms_per_batch_{args.batch_size}"] = round(
        1000 * (time.perf_counter() - start) / args.batches, 2)

    if args.compare_executors:
        results.update(compare_executors(args.source, args.workers or os.cpu_count()))
    print(json.dumps(results, indent=2))
    print(summary)


if __name__ == "__main__":
    main()
