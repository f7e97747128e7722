"""Calibration figures (ECE, reliability curve) on sets with known answers, and an evaluation on a
folder of normal studies only: specificity, positive rate and calibration, AUROC said undefined.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from triage.modelops import evaluation
from triage.modelops.metrics import expected_calibration_error, reliability_curve


def test_a_calibrated_model_has_no_calibration_error() -> None:
    # of the studies scored 0.25 one in four is positive, of those scored 0.75 three in four
    scores = [0.25] * 4 + [0.75] * 4
    labels = [1, 0, 0, 0] + [1, 1, 1, 0]
    assert expected_calibration_error(scores, labels) == pytest.approx(0.0)
    curve = reliability_curve(scores, labels)
    assert len(curve) == 10
    assert [(b.low, b.high) for b in curve][:3] == [(0.0, 0.1), (0.1, 0.2), (0.2, 0.3)]
    filled = [(b.low, b.count, b.mean_probability, b.positive_fraction) for b in curve if b.count]
    assert filled == [(0.2, 4, 0.25, 0.25), (0.7, 4, 0.75, 0.75)]
    assert all(b.mean_probability is None and b.positive_fraction is None for b in curve[3:7])


def test_an_over_confident_model_has_the_gap_as_its_error() -> None:
    # sure of every study (0.95 or 0.05) and right only half the time
    scores = [0.95, 0.95, 0.05, 0.05]
    labels = [1, 0, 1, 0]
    assert expected_calibration_error(scores, labels) == pytest.approx(0.45)
    curve = reliability_curve(scores, labels)
    assert (curve[0].count, curve[0].positive_fraction) == (2, 0.5)
    assert (curve[9].count, curve[9].mean_probability) == (2, 0.95)


def test_the_error_is_weighted_by_the_studies_in_each_bin() -> None:
    # three at 0.9, all positive (gap 0.1); one at 0.1, positive (gap 0.9): (3 * 0.1 + 0.9) / 4
    assert expected_calibration_error([0.9, 0.9, 0.9, 0.1], [1, 1, 1, 1]) == pytest.approx(0.3)


def test_bin_edges_match_the_histogram_and_one_is_in_the_last_bin() -> None:
    curve = reliability_curve([0.0, 0.1, 0.3, 0.7, 0.99, 1.0], [0, 0, 0, 1, 1, 1])
    assert [b.count for b in curve] == [1, 1, 0, 1, 0, 0, 0, 1, 0, 2]
    assert curve[9].mean_probability == pytest.approx(0.995)


def test_an_empty_set_has_no_calibration_error() -> None:
    assert math.isnan(expected_calibration_error([], []))
    assert all(b.count == 0 for b in reliability_curve([], []))


def _evaluate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cases: dict[str, Any]) -> Any:
    """`evaluate` on a labelled folder whose studies the model scores as ``cases`` says
    (study -> (label, probability)): the figures, without running a network."""
    for name in cases:
        (tmp_path / name).mkdir()
    lines = ["study,label"] + [f"{name},{label}" for name, (label, _) in cases.items()]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")

    def score_study(
        _model: Any, folder: Path, _device: Any, _options: Any
    ) -> tuple[float, str, None]:
        return cases[folder.name][1], "", None

    monkeypatch.setattr(evaluation, "score_study", score_study)
    model = SimpleNamespace(name="m", version="1+abc", threshold=0.5, reference=None)
    roc = tmp_path / "roc.png"
    result = evaluation.evaluate(model, tmp_path, device=torch.device("cpu"), roc_png=roc)  # type: ignore[arg-type]
    return result, roc


def test_an_evaluation_on_normal_studies_only_gives_specificity_and_says_auroc_is_undefined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probabilities = [0.05, 0.1, 0.2, 0.3, 0.6]
    cases = {f"normal{i}": (0, p) for i, p in enumerate(probabilities)}
    result, roc = _evaluate(tmp_path, monkeypatch, cases)
    assert (result.positives, result.negatives) == (0, 5)
    assert result.specificity == 0.8  # 0.6 is the one false positive
    assert result.positive_rate == 0.2
    assert result.auroc is None and result.sensitivity is None
    assert result.suggested_threshold is None
    assert "no positive" in result.undefined["auroc"]
    assert set(result.undefined) == {"auroc", "sensitivity", "suggested_threshold"}
    # all negative: the calibration error is the mean probability given to normals
    assert result.ece == pytest.approx(sum(probabilities) / 5)
    assert [b["count"] for b in result.reliability] == [1, 1, 1, 1, 0, 0, 1, 0, 0, 0]
    assert {b["positive_fraction"] for b in result.reliability if b["count"]} == {0.0}
    assert result.roc_png is None and not roc.exists()
    assert result.as_dict()["undefined"] == result.undefined


def test_an_evaluation_records_positive_rate_and_calibration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = {"a": (1, 0.95), "b": (0, 0.95), "c": (1, 0.05), "d": (0, 0.05)}
    result, _ = _evaluate(tmp_path, monkeypatch, cases)
    assert (result.auroc, result.sensitivity, result.specificity) == (0.5, 0.5, 0.5)
    assert result.positive_rate == 0.5
    assert result.ece == pytest.approx(0.45)
    assert result.reliability[9] == {
        "low": 0.9,
        "high": 1.0,
        "count": 2,
        "mean_probability": 0.95,
        "positive_fraction": 0.5,
    }
    assert result.undefined == {}
