"""`triage models evaluate` prints and keeps the calibration; `triage models show` puts the live
positive rate beside the evaluation's and flags drift.

The commands run in this process on a registry of their own with a small registered bundle; the
model's probability of each labelled study is given (``score_study`` is replaced), so that the
figures are known. Scoring real studies end to end is tests/unit/modelops/test_model_evaluate.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from support.bundles import classifier_bundle, options, segmenter_bundle, write_options
from support.factories import lesion_ct_series, phantom_ct_series
from support.live_results import add_live_results
from typer.testing import CliRunner

from triage.app import models_cli
from triage.catalogue import Catalogue
from triage.modelops import evaluation
from triage.modelops.registry import ModelLifecycle
from triage.modelops.versions import VersionInfo
from triage.store import LocalStore
from triage.synthetic.series import write_series

#: study -> (label, the model's probability): one positive found, four normals scored low
LABELLED = {"p1": (1, 0.9), "n1": (0, 0.1), "n2": (0, 0.1), "n3": (0, 0.1), "n4": (0, 0.1)}
NORMALS = {"n1": (0, 0.05), "n2": (0, 0.15), "n3": (0, 0.6), "n4": (0, 0.2)}


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ModelLifecycle, VersionInfo]:
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'catalogue.db'}")
    lifecycle = ModelLifecycle(catalogue, LocalStore(tmp_path / "store"), tmp_path / "cache")
    bundle = segmenter_bundle(tmp_path / "zoo")
    opts = write_options(tmp_path / "opts.json", options("segmentation", spatial_size=[48, 48, 16]))
    info, _ = lifecycle.register(bundle, opts, by="t")
    monkeypatch.setenv("TRIAGE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(models_cli, "_lifecycle", lambda: lifecycle)
    monkeypatch.setattr(models_cli, "console", Console(width=200))
    yield lifecycle, info
    catalogue.close()


def labelled_set(folder: Path, cases: dict[str, tuple[int, float]], mp: pytest.MonkeyPatch) -> Path:
    for name in cases:
        (folder / name).mkdir(parents=True)
    lines = ["study,label"] + [f"{name},{label}" for name, (label, _) in cases.items()]
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    mp.setattr(evaluation, "score_study", lambda _m, f, _d, _o: (cases[f.name][1], "", None))
    return folder


def models(*args: str) -> str:
    """What the command prints (it must succeed)."""
    run = CliRunner().invoke(models_cli.models_app, list(args))
    assert run.exit_code == 0, run.output
    return run.output


def flat(text: str) -> str:
    """The text on one line: rich wraps a long sentence at the console width."""
    return " ".join(text.split())


def test_evaluate_prints_and_keeps_the_calibration_and_show_flags_a_drifted_positive_rate(
    registry: tuple[ModelLifecycle, VersionInfo], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lifecycle, info = registry
    name, version = info.name, info.version
    roc = str(tmp_path / "roc.png")

    normals = labelled_set(tmp_path / "normals", NORMALS, monkeypatch)
    text = models("evaluate", name, version, str(normals), "--roc", roc)
    assert "AUROC not defined (needs positive and negative studies; this set has no" in flat(text)
    assert "specificity 0.75, positive rate 0.25" in flat(text)  # 0.6: the one false positive
    assert "no threshold to suggest" in flat(text)
    assert "calibration: ECE 0.25 " in flat(text)  # the mean probability given to the normals

    labelled = labelled_set(tmp_path / "labelled", LABELLED, monkeypatch)
    text = models("evaluate", name, version, str(labelled), "--roc", roc)
    said = flat(text)
    assert "AUROC 1; at threshold 0.5: sensitivity 1, specificity 1, positive rate 0.2" in said
    # four at 0.1, all normal (gap 0.1); one at 0.9, positive (gap 0.1)
    assert "calibration: ECE 0.1 " in said
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}
    assert rows["0.1-0.2"] == ["4", "0.1", "0"]
    assert rows["0.9-1.0"] == ["1", "0.9", "1"]
    assert rows["0.5-0.6"] == ["0", "-", "-"]

    stored = json.loads(models("show", name, "--json"))["versions"][0]
    assert (stored["evaluation"]["ece"], stored["evaluation"]["positive_rate"]) == (0.1, 0.2)
    assert stored["evaluation"]["reliability"][9]["positive_fraction"] == 1.0
    assert stored["live"]["results"] == 0 and stored["live"]["positive_rate"] is None

    # live: 19 results, 10 positive (0.53 > max(2 x 0.2, 0.2 + 0.2)) - too few to call it
    add_live_results(lifecycle.catalogue, name, version, [0.8] * 10 + [0.1] * 9)
    text = models("show", name)
    assert "live positive rate 0.526 (n=19) vs evaluation 0.2" in flat(text)
    assert "DRIFT" not in flat(text)
    add_live_results(lifecycle.catalogue, name, version, [0.1])
    text = models("show", name)
    assert "live positive rate 0.5 (n=20) vs evaluation 0.2 DRIFT: live rate above" in flat(text)
    live = json.loads(models("show", name, "--json"))["versions"][0]["live"]
    assert (live["results"], live["positive_rate"], live["evaluation_positive_rate"]) == (
        20,
        0.5,
        0.2,
    )
    assert live["positive_rate_drift"] is True


def test_register_with_a_reference_folder_records_and_shows_it(
    registry: tuple[ModelLifecycle, VersionInfo], tmp_path: Path
) -> None:
    """`register --reference DIR` (issue 15): the version's input reference is made from the
    engineer's studies and shown by register and show; without one, both say it is unchecked."""
    lifecycle, unchecked = registry
    text = models("show", unchecked.name)
    assert "input reference: none" in flat(text)

    studies = tmp_path / "reference"
    for seed in range(8):
        if seed % 2:
            _, datasets = lesion_ct_series(f"cli-ref{seed}", seed=seed)
        else:
            datasets = phantom_ct_series(f"cli-ref{seed}", seed=seed, shape=(48, 48, 12))
        write_series(datasets, studies / f"study{seed}")
    bundle = classifier_bundle(tmp_path / "zoo-cls")
    opts = write_options(tmp_path / "cls.json", options(spatial_size=[64, 64, 32]))
    text = models("register", str(bundle), "--options", str(opts), "--reference", str(studies))
    assert f"input reference: 8 studies (8 studies from {studies})" in flat(text)
    (info,) = [v for v in lifecycle.versions() if v.name == "zoo_classifier"]
    assert info.reference is not None and info.reference["studies"] == 8
    text = models("show", "zoo_classifier")
    assert f"input reference: 8 studies (8 studies from {studies}), OOD threshold" in flat(text)
