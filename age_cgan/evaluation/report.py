"""The outputs: evaluation.json, evaluation.md (tables beside the paper's figures) and the
figure."""

from __future__ import annotations

import math
from pathlib import Path

from age_cgan.evaluation.aging_report import aging_markdown
from age_cgan.evaluation.figure import save_figure
from age_cgan.evaluation.settings import GOALS, PAPER_AGE_GAP, PAPER_IDENTITY, REFERENCE
from age_cgan.files import write_text, writing
from age_cgan.runs import write_json_atomic


def write_outputs(results, out_dir, bins, test_faces, examples) -> dict:
    """evaluation.json, evaluation.md and evaluation.png in ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    with writing(out_dir, "the evaluation folder"):
        out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "evaluation.json", "markdown": out_dir / "evaluation.md",
             "figure": out_dir / "evaluation.png"}
    write_json_atomic(paths["json"], results, "the evaluation results")
    write_text(paths["markdown"], markdown_report(results), "the evaluation report")
    save_figure(paths["figure"], results, bins, test_faces, examples)
    return {key: str(value) for key, value in paths.items()}


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _pct(value) -> str:
    return "n/a" if _missing(value) else f"{100 * value:.1f}%"


def _num(value, digits=3) -> str:
    return "n/a" if _missing(value) else f"{value:.{digits}f}"


def _row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _age_markdown(age) -> list[str]:
    gen, real = age["generated"], age["real"]
    lines = ["## 1. Age accuracy", "",
             _row("category", "generated: accuracy", "generated: MAE to centre",
                  "real: accuracy", "real: MAE to centre"), _row(*["---"] * 5)]
    for label in dict.fromkeys([*gen["per_category"], *real["per_category"]]):
        g, r = gen["per_category"].get(label, {}), real["per_category"].get(label, {})
        lines.append(_row(label, _pct(g.get("accuracy")), _num(g.get("mae_to_centre"), 1),
                          _pct(r.get("accuracy")), _num(r.get("mae_to_centre"), 1)))
    lines.append(_row("**mean**", f"**{_pct(gen['mean_accuracy'])}**",
                      _num(gen["mae_to_centre"], 1), f"**{_pct(real['mean_accuracy'])}**",
                      _num(real["mae_to_centre"], 1)))
    reference = REFERENCE["age_real_utkface64"]
    return lines + [
        "", f"Real test faces: {_pct(real['overall_accuracy'])} in the right category (over "
        f"faces), MAE {_num(real.get('mae_years'), 1)} years to the true age (reference on shared "
        f"UTKFace 64x64: {_pct(reference['accuracy'])}, {reference['mae_years']} years).  ",
        f"Generated accuracy is **{_pct(age['relative_gap'])} lower** than real (relative, mean "
        f"over the {len(age['gap_categories'])} categories with real test faces); the paper: "
        f"{_pct(PAPER_AGE_GAP)} lower; our goal: within "
        f"{_pct(GOALS['age_gap'])}.", ""]


def _identity_markdown(identity) -> list[str]:
    lines = ["## 2. Identity preservation (paper Table 1)", "",
             _row("latent", "same person (dlib, d < 0.6)", "mean distance", "paper (OpenFace)"),
             _row(*["---"] * 4)]
    for name, m in identity["methods"].items():
        lines.append(_row(name, _pct(m["same_person_rate"]), _num(m["mean_distance"]),
                          _pct(PAPER_IDENTITY.get(name))))
    ceiling = REFERENCE["dlib_cacdvs64"]
    return lines + [
        "", f"Ceiling: dlib accepts {_pct(ceiling['same_accepted'])} of same-person CACD-VS "
        f"pairs at 64x64 ({_pct(ceiling['different_accepted'])} of different-person pairs). "
        f"Goal: z*_IP >= {_pct(GOALS['z*_IP_same_person'])}.  ",
        f"FR: {identity['face_recognizer']['note']}.", ""]


def _statistics_markdown(stats) -> list[str]:
    lines = ["## 3. Image statistics (dlib descriptor space)", "", _row("measure", "value"),
             _row("---", "---"),
             _row("Frechet distance, generated vs real test",
                  _num(stats["frechet_generated_vs_test"], 4))]
    if "frechet_train_vs_test" in stats:
        lines.append(_row("Frechet distance, real train vs real test (floor)",
                          _num(stats["frechet_train_vs_test"], 4)))
    return lines + [_row("mean pairwise distance, generated", _num(stats["diversity_generated"])),
                    _row("mean pairwise distance, real test", _num(stats["diversity_test"])), ""]


def _pairs_markdown(pairs) -> list[str]:
    lines = ["## Face recogniser check on labelled pairs", "",
             f"{pairs['pairs']} pairs of `{pairs['pairs_csv']}`.", "",
             _row("recogniser", "threshold", "accuracy", "same accepted", "different accepted",
                  "accuracy, threshold by fold", "AUC"), _row(*["---"] * 7)]
    for key, label in (("dlib", "dlib"), ("fr", "run's FR head")):
        if key in pairs:
            p = pairs[key]
            lines.append(_row(label, _num(p.get("threshold")), _pct(p.get("accuracy")),
                              _pct(p.get("same_accepted")), _pct(p.get("different_accepted")),
                              _pct(p["cv_accuracy"]), _num(p["auc"])))
    return lines + ["", "The FR head's threshold is dlib's 0.6 over the teacher's scale (FR is "
                    "distilled to centred, unit-norm descriptors); reference for dlib on "
                    "CACD-VS: 93.5% / 0.3%.", ""]


def markdown_report(results: dict) -> str:
    """The evaluation as Markdown tables, each beside the paper's figure."""
    lines = [f"# Evaluation of `{results['run']}`", "",
             f"Data: `{results.get('data')}`, {results['test_faces']} test faces; age categories "
             f"{results['bins']}.  ",
             f"Judges: age by {results['judges']['age']}; identity by "
             f"{results['judges']['identity']}.", ""]
    export = results.get("export") or {}
    if results.get("faces_file"):
        lines[-1:-1] = ["", f"Faces exported on the {export.get('backend')} backend "
                        f"({export.get('created')}) to `{results['faces_file']}`, judged here."]
    if results.get("age"):
        lines += _age_markdown(results["age"])
    if results.get("identity"):
        lines += _identity_markdown(results["identity"])
    if results.get("statistics"):
        lines += _statistics_markdown(results["statistics"])
    if results.get("aging"):
        lines += aging_markdown(results["aging"])
    if results.get("pairs"):
        lines += _pairs_markdown(results["pairs"])
    timings = results.get("timings_s", {})
    if timings:
        lines.append("Time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    return "\n".join(lines) + "\n"
