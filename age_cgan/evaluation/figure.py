"""evaluation.png: the measurements as plots, and test faces with their reconstructions."""

from __future__ import annotations

import numpy as np

from age_cgan.evaluation.aging_report import (aged_faces_grid, aged_faces_panel,
                                               identity_vs_age_panel)
from age_cgan.evaluation.settings import PAPER_IDENTITY, REFERENCE
from age_cgan.files import atomic_path
from age_cgan.judges import DLIB_THRESHOLD


def save_figure(path, results, bins, test_faces, examples) -> None:
    """Age accuracy per category, identity rates with the paper's, distance histograms, and a
    strip of test faces with their reconstructions; with the aging section, identity against
    age accuracy of aged real faces, and a few test faces aged by each method."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    aging = results.get("aging") and examples.get("aging")
    if aging:
        rows = aged_faces_grid(examples["aging"], bins.labels)[1]
        fig, axes = plt.subplots(3, 2, figsize=(12, 9 + max(4.5, 0.45 * rows)),
                                 gridspec_kw={"height_ratios": [1, 1, max(1, rows / 10)]})
        identity_vs_age_panel(axes[2, 0], results["aging"])
        aged_faces_panel(axes[2, 1], examples["aging"], bins.labels)
    else:
        fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    ax = axes[0, 0]
    labels = bins.labels
    x = np.arange(len(labels))
    for offset, key, name in ((-0.2, "generated", "generated"), (0.2, "real", "real test")):
        per = results["age"][key]["per_category"]
        ax.bar(x + offset, [per.get(l, {}).get("accuracy", 0) for l in labels], 0.4, label=name)
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 1)
    ax.set_ylabel("age estimator in the right category")
    ax.set_title("1. Age accuracy")
    ax.legend()

    ax = axes[0, 1]
    methods = list(results["identity"]["methods"])
    x = np.arange(len(methods))
    ours = [results["identity"]["methods"][m]["same_person_rate"] for m in methods]
    paper = [PAPER_IDENTITY[m] for m in methods]
    bars = ax.bar(x - 0.2, ours, 0.4, label="ours (dlib < 0.6)")
    ax.bar_label(bars, labels=[f"{100 * v:.0f}%" for v in ours], fontsize=8)
    ax.bar(x + 0.2, paper, 0.4, label="paper (OpenFace)")
    ax.axhline(REFERENCE["dlib_cacdvs64"]["same_accepted"], color="grey", ls="--", lw=1,
               label="dlib on same-person CACD-VS pairs")
    ax.set_xticks(x, methods)
    ax.set_ylim(0, 1)
    ax.set_title("2. Same-person rate, test face vs reconstruction")
    ax.legend(loc="upper left", fontsize=8)

    ax = axes[1, 0]
    every = np.concatenate([results["identity"]["methods"][m]["distances"] for m in methods]
                           or [np.zeros(1)])  # (--methods may name no paper method)
    edges = np.linspace(0, max(1.2, float(every.max()) + 0.05), 40)
    for m in methods:
        ax.hist(results["identity"]["methods"][m]["distances"], bins=edges, alpha=0.5, label=m)
    ax.axvline(DLIB_THRESHOLD, color="black", ls="--", lw=1, label="0.6")
    ax.set_xlabel("dlib distance, test face to reconstruction")
    ax.set_title("Identity distances")
    ax.legend(fontsize=8)

    ax = axes[1, 1]
    from age_cgan.visualize import labelled_grid

    n = min(6, len(test_faces))
    rows = [test_faces[:n]] + [examples[m][0][:n] for m in methods]
    grid = np.stack(rows, 1).reshape(-1, *test_faces.shape[1:])
    ax.imshow(labelled_grid(grid, n, len(rows), ["test", *methods]))
    ax.set_axis_off()
    ax.set_title("Reconstructions at the face's own age")
    stats = results["statistics"]
    fig.suptitle(f"{results['run']}: Frechet distance (dlib space) generated vs test "
                 f"{stats['frechet_generated_vs_test']:.3f}")
    fig.tight_layout()
    with atomic_path(path, "the evaluation figure") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
