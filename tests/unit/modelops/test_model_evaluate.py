"""`triage models evaluate` on a labelled set of synthetic studies, and the figures it gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from triage.app.demo import write_demo_studies
from triage.errors import TriageError
from triage.modelops.evaluation import read_labels
from triage.modelops.metrics import auroc, operating_point, roc_curve, threshold_for_sensitivity

pytestmark = pytest.mark.slow


def test_metrics_on_a_known_set() -> None:
    scores = [0.1, 0.4, 0.35, 0.8, 0.7, 0.2]
    labels = [0, 0, 1, 1, 1, 0]
    assert auroc(scores, labels) == pytest.approx(8 / 9)
    point = operating_point(scores, labels, 0.5)
    assert (point.sensitivity, point.specificity) == (pytest.approx(2 / 3), 1.0)
    assert threshold_for_sensitivity(scores, labels, 1.0) == 0.35
    assert threshold_for_sensitivity(scores, labels, 0.6) == 0.7
    fpr, tpr, _ = roc_curve(scores, labels)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)


def test_labels_errors_name_the_line(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "labels.csv").write_text("study,label\na,1\nb,0\n")
    with pytest.raises(TriageError, match="line 3: no study folder"):
        read_labels(tmp_path)
    (tmp_path / "labels.csv").write_text("study,label\na,maybe\n")
    with pytest.raises(TriageError, match="line 2: label 'maybe' is not 1 or 0"):
        read_labels(tmp_path)


def test_evaluating_the_shipped_classifier_reports_its_operating_point_and_roc(
    tmp_path: Path,
) -> None:
    dataset = tmp_path / "labelled"
    studies = write_demo_studies(
        dataset, count=6, seed=5, unanalysable=1, shape=(128, 128, 24), spacing=(1.8, 1.8, 5.0)
    )
    lines = ["study,label"] + [f"{s.folder.name},{int(s.lesion)}" for s in studies]
    (dataset / "labels.csv").write_text("\n".join(lines) + "\n")
    env = {**os.environ, "TRIAGE_HOME": str(tmp_path / "home"), "TRIAGE_DEVICE": "cpu"}
    roc = tmp_path / "roc.png"

    def cli(*args: str) -> str:
        run = subprocess.run(
            [sys.executable, "-m", "triage.app.cli", "models", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert run.returncode == 0, run.stderr
        return run.stdout

    # "1.0.0": the bundle's own version names the one registered version that carries it
    result = json.loads(
        cli("evaluate", "ich_classifier", "1.0.0", str(dataset), "--roc", str(roc), "--json")
    )
    assert (result["studies"], result["positives"], result["negatives"]) == (7, 3, 3)
    (skipped,) = result["not_analysed"]
    assert "no series matches" in skipped["reason"]
    assert result["auroc"] == 1.0  # large lesions: the reference model separates them
    assert result["sensitivity"] == 1.0
    assert 0.0 <= result["specificity"] <= 1.0
    # AUROC 1: the threshold for sensitivity >= 0.9 is the lowest positive score, and it
    # separates the set
    positives = [s["probability"] for s in result["scores"] if s["label"] == 1]
    assert result["suggested_threshold"] == pytest.approx(min(positives))
    assert (result["suggested_sensitivity"], result["suggested_specificity"]) == (1.0, 1.0)
    assert roc.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shown = json.loads(cli("show", "ich_classifier", "--json"))
    (version,) = shown["versions"]
    assert version["evaluation"]["auroc"] == 1.0
    assert shown["changes"][0]["action"] == "evaluate"
    text = cli("show", "ich_classifier")
    assert "evaluation on" in text and "live (last 0)" in text
