"""Images/second per stage: the bare compiled step vs the whole training loop.

    python benchmarks/bench_train.py --data ../shared/data/utkface64 --batch-size 32 --steps 8
    KERAS_BACKEND=jax python benchmarks/bench_train.py ... --mixed-precision   # on a GPU
    python benchmarks/bench_train.py ... --stages 1 --arch both   # tutorial and lite side by side
    python benchmarks/bench_train.py ... --devices 2   # data parallel (--batch-size is global)

The bare step calls the compiled step on one pre-made batch; the loop is ``run_stage`` as
train.py runs it (fresh batches from the sampler, progress bar, scalar windows; sample grids and
checkpoints only at the end, which are excluded from its per-step figure). The first two steps
(compilation) are excluded from both. Prints one JSON line per stage.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import keras

from age_cgan.config import TrainConfig
from age_cgan.runs import RunFolder
from age_cgan.backend import BACKEND, Step
from age_cgan.backend.devices import device_count, placement
from age_cgan.training import STAGE_CLASSES, load_data, run_stage, train


def bare_step_seconds(config, stage_name, dataset, steps):
    devices = placement(config.devices, config.batch_size)
    keras.utils.set_random_seed(config.seed)
    with devices.scope():
        stage = STAGE_CLASSES[stage_name](config, RunFolder(config.run), dataset)
        step = Step(stage.models, stage.optimizers, stage.updates, placement=devices)
    batch = stage.next_batch()
    for _ in range(2):
        float(next(iter(step(batch).values())))
    started = time.perf_counter()
    for _ in range(steps):
        metrics = step(batch)
    float(next(iter(metrics.values())))  # wait for the device
    return (time.perf_counter() - started) / steps


def loop_step_seconds(config, stage_name):
    rows = [json.loads(line) for line in (Path(config.run) / f"stage{stage_name}" / "metrics.jsonl").open()]
    timed = [row[f"perf/stage{stage_name}/sec_per_step"] for row in rows if row["step"] > 2]
    return sum(timed) / len(timed)


def parser() -> argparse.ArgumentParser:
    from age_cgan.helpformat import DocstringHelpFormatter

    p = argparse.ArgumentParser(prog="benchmarks/bench_train.py", description=__doc__,
                                formatter_class=DocstringHelpFormatter)
    p.add_argument("--data", required=True, help="a face source, as train.py --data takes")
    p.add_argument("--stages", default="123", help="the stages to time, as one string of "
                   "their numbers (stages 2 and 3 first train what they need for 2 steps)")
    p.add_argument("--batch-size", type=int, default=32, help="faces per step")
    p.add_argument("--steps", type=int, default=8, help="timed steps (after 2 warm-up steps)")
    p.add_argument("--mixed-precision", action="store_true",
                   help="compute in bfloat16, as train.py --mixed-precision (for GPUs)")
    p.add_argument("--arch", default="tutorial", help="tutorial, lite, or both (side by side)")
    p.add_argument("--mismatch-weight", type=float, default=0.0,
                   help="as train.py --mismatch-weight (stage 1's matching-aware term)")
    p.add_argument("--fr-input-size", type=int, default=160,
                   help="as train.py --fr-input-size (stage 3's face recogniser)")
    p.add_argument("--devices", default=1, help="N local devices or all (data parallel); the "
                   "batch size is the global batch")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    archs = ("tutorial", "lite") if args.arch == "both" else (args.arch,)
    for arch in archs:
        bench_arch(args, arch)


def bench_arch(args, arch):
    with tempfile.TemporaryDirectory() as folder:
        config = TrainConfig(
            run=folder, data=args.data, batch_size=args.batch_size, steps=args.steps + 2,
            log_every=1, fr_weights="none", fr_input_size=args.fr_input_size, progress=False,
            mixed_precision=args.mixed_precision, arch=arch,
            mismatch_weight=args.mismatch_weight,
            devices=args.devices if args.devices == "all" else int(args.devices),
        )
        dataset = load_data(config)
        for stage_name in args.stages:
            if stage_name in "23" and not RunFolder(folder).has_model("generator"):
                train(config.replace(stage="1", steps=2))  # stages 2-3 need a generator
            if stage_name == "3" and not RunFolder(folder).has_model("encoder"):
                train(config.replace(stage="2", steps=2))
            stage_config = config.replace(stage=stage_name, overwrite=True)
            run_stage(stage_config, stage_name, dataset if STAGE_CLASSES[stage_name].needs_data else None)
            loop = loop_step_seconds(stage_config, stage_name)
            bare = bare_step_seconds(stage_config, stage_name, dataset, args.steps)
            print(json.dumps({
                "stage": stage_name, "arch": arch, "backend": BACKEND,
                "batch_size": args.batch_size, "mixed_precision": args.mixed_precision,
                "mismatch_weight": args.mismatch_weight,
                "bare_images_per_sec": round(args.batch_size / bare, 2),
                "loop_images_per_sec": round(args.batch_size / loop, 2),
                "loop_overhead_pct": round(100 * (loop / bare - 1), 1),
                "devices": device_count(config.devices),
                "images_per_sec_per_device": round(
                    args.batch_size / bare / device_count(config.devices), 2),
            }), flush=True)


if __name__ == "__main__":
    main()
