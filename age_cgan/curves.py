"""Training curves from a run folder's ``stage*/metrics.jsonl``, as one PNG (no TensorBoard).

Every stage logs the means of each scalar window to ``metrics.jsonl`` beside its TensorBoard
events. This reads them back, for a README figure or for a run whose events stayed on another
machine (the GPU job brings back the JSON lines, not the events). A resumed stage appends to
its file; where a step appears twice (a resume from an earlier checkpoint), the later line
wins, as the later run is the one the weights come from.

    python -m age_cgan.curves logs/demo --out curves.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from age_cgan.files import atomic_path

#: Panel titles by the tag's middle part: ``stage1/loss/d`` -> "losses".
GROUPS = {"loss": "losses", "d": "discriminator outputs", "": "other scalars"}


def read_metrics(path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """tag -> (steps, values) from one metrics.jsonl, steps ascending, later lines winning."""
    rows = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                rows[int(row["step"])] = row
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"{path}, line {number}: not a metrics line ({error})") from error
    series: dict[str, list] = {}
    for step in sorted(rows):
        for tag, value in rows[step].items():
            if tag != "step" and isinstance(value, (int, float)):
                series.setdefault(tag, []).append((step, float(value)))
    return {tag: (np.array([s for s, _ in points]), np.array([v for _, v in points]))
            for tag, points in series.items()}


def panels(run) -> list[tuple[str, dict]]:
    """(title, {tag: (steps, values)}) per stage and tag group, in stage order; perf/ tags and
    stages without metrics are left out."""
    run = Path(run)
    found = []
    for folder in sorted(run.glob("stage*"), key=lambda p: (len(p.name), p.name)):
        path = folder / "metrics.jsonl"
        if not path.is_file():
            continue
        groups: dict[str, dict] = {}
        for tag, series in read_metrics(path).items():
            parts = tag.split("/")
            if parts[0] == "perf":
                continue
            groups.setdefault(parts[1] if len(parts) > 2 else "", {})[tag] = series
        stage = folder.name.removeprefix("stage")
        for group, tags in groups.items():
            found.append((f"stage {stage}: {GROUPS.get(group, group)}", tags))
    return found


def plot_curves(run, out=None, overwrite: bool = True) -> Path:
    """Write ``out`` (default ``RUN/curves.png``): one panel per stage and tag group; without
    ``overwrite`` a file this project did not write is refused (``aging.grid.WouldReplace``)
    before any plotting."""
    import matplotlib

    from age_cgan.aging.grid import check_replace
    from age_cgan.visualize import MAKER

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    run = Path(run)
    found = panels(run)
    if not found:
        raise FileNotFoundError(f"no stage*/metrics.jsonl with scalars in {run}: train a stage "
                                "into this run folder first")
    out = Path(out) if out is not None else run / "curves.png"
    check_replace(out, overwrite)
    cols = min(3, len(found))
    rows = -(-len(found) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.2 * rows), squeeze=False)
    for ax, (title, tags) in zip(axes.flat, found):
        for tag, (steps, values) in sorted(tags.items()):
            ax.plot(steps, values, label=tag.split("/")[-1], linewidth=1.2)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(found):]:
        ax.axis("off")
    fig.suptitle(f"{run.name}: window means from metrics.jsonl", fontsize=11)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=90, format="png", metadata={"Software": MAKER})
    plt.close(fig)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m age_cgan.curves",
                                description="Plot a run's training curves (stage*/metrics.jsonl) "
                                "into one PNG.")
    p.add_argument("run", help="run folder (or a folder holding stage*/metrics.jsonl)")
    p.add_argument("--out", help="PNG to write (default: RUN/curves.png); a file this command "
                   "did not write is replaced only with --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out although another program wrote it")
    args = p.parse_args(argv)
    try:
        print(f"wrote {plot_curves(args.run, args.out, args.overwrite)}")
    except (OSError, ValueError) as error:  # no metrics, WouldReplace, WriteFailed
        words = error.words(lambda part: "--" + part["setting"]) if hasattr(error, "words") \
            else str(error)
        print(f"curves: error: {words}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
