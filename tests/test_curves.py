"""Training curves read back from metrics.jsonl (hand-made lines) and drawn to a PNG."""

import json

import pytest
from PIL import Image

from age_cgan.curves import main, panels, plot_curves, read_metrics


def write_lines(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_curves_keep_the_later_line_of_a_repeated_step_and_skip_perf(tmp_path):
    write_lines(tmp_path / "stage1" / "metrics.jsonl", [
        {"step": 10, "stage1/loss/d": 1.0, "stage1/loss/g": 3.0, "stage1/d/p_real": 0.7,
         "perf/stage1/images_per_sec": 15.0},
        {"step": 20, "stage1/loss/d": 0.9, "stage1/loss/g": 2.0, "stage1/d/p_real": 0.6},
        # resumed from the step-10 checkpoint: step 20 again, and it is the one that counts
        {"step": 20, "stage1/loss/d": 0.8, "stage1/loss/g": 2.5, "stage1/d/p_real": 0.65},
        {"step": 30, "stage1/loss/d": 0.7, "stage1/loss/g": 2.2, "stage1/d/p_real": 0.6},
    ])
    write_lines(tmp_path / "stage2" / "metrics.jsonl", [
        {"step": 5, "stage2/loss/latent": 12.0, "stage2/loss/zeros_baseline": 10.0,
         "stage2/pixel_mse": 0.3}])
    steps, values = read_metrics(tmp_path / "stage1" / "metrics.jsonl")["stage1/loss/d"]
    assert steps.tolist() == [10, 20, 30] and values.tolist() == [1.0, 0.8, 0.7]
    titles = [title for title, _ in panels(tmp_path)]
    assert titles == ["stage 1: losses", "stage 1: discriminator outputs", "stage 2: losses",
                      "stage 2: other scalars"]
    assert all(not tag.startswith("perf/") for _, tags in panels(tmp_path) for tag in tags)
    out = plot_curves(tmp_path)
    assert out == tmp_path / "curves.png" and Image.open(out).size[0] > 400


def test_curves_errors_name_the_problem(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no stage"):
        plot_curves(tmp_path)
    (tmp_path / "stage1").mkdir()
    (tmp_path / "stage1" / "metrics.jsonl").write_text('{"step": 1, "stage1/loss/d": 1}\nnot json\n')
    assert main([str(tmp_path)]) == 1
    assert "metrics.jsonl, line 2" in capsys.readouterr().err
