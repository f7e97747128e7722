"""Evaluate a model version on a labelled set of studies.

A labelled set is a folder with one sub-folder of DICOM files per study, and a CSV of labels
(``labels.csv`` in that folder unless named otherwise)::

    study,label
    case001,1
    case002,0

``study`` names the sub-folder; ``label`` is 1 when the model's finding is present, 0 when it is
not. Every study goes through the pipeline's own steps - series selection by the model's rules,
volume assembly, preprocessing on the device, the model and its scoring - so the figures are the
ones the node would give. The result: AUROC, sensitivity, specificity and the positive rate
(the share of studies flagged) at the model's threshold, the threshold that reaches a target
sensitivity, the calibration (expected calibration error and reliability curve,
`triage.modelops.metrics`), the score histogram, and the ROC curve as a PNG.

A figure the set cannot give is None, and ``undefined`` says why: a set of normal studies only
gives specificity, positive rate and calibration, not AUROC or sensitivity.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from pydicom.errors import InvalidDicomError

from triage.analysis.inference import score
from triage.analysis.model import TriageModel
from triage.analysis.ood import input_statistics
from triage.analysis.preprocess import model_input_with_affine
from triage.analysis.selection import select_series
from triage.catalogue import SeriesSummary
from triage.errors import ModelError, NotAVolumeError, TriageError
from triage.imaging.inspect import as_catalogued
from triage.imaging.volume import AssemblyOptions, load_files
from triage.modelops.metrics import (
    auroc,
    expected_calibration_error,
    histogram,
    operating_point,
    reliability_curve,
    roc_curve,
    threshold_for_sensitivity,
)
from triage.results import is_uncertain

LABELS_FILE = "labels.csv"
_TRUE = {"1", "true", "yes", "positive"}
_FALSE = {"0", "false", "no", "negative"}


@dataclass(frozen=True)
class LabelledStudy:
    name: str
    folder: Path
    label: int


@dataclass(frozen=True)
class StudyScore:
    """One study's outcome: its probability, or why it was not analysed."""

    study: str
    label: int
    probability: float | None
    reason: str = ""
    #: the input's out-of-distribution score (None: the model has no reference)
    ood_score: float | None = None


@dataclass
class Evaluation:
    model: str
    version: str
    dataset: str
    studies: int
    positives: int
    negatives: int
    auroc: float | None
    threshold: float
    sensitivity: float | None
    specificity: float | None
    target_sensitivity: float
    suggested_threshold: float | None
    suggested_sensitivity: float | None
    suggested_specificity: float | None
    histogram: list[int]
    roc_png: str | None
    device: str
    #: the share of scored studies at or above the threshold: what `show` compares live with
    positive_rate: float | None = None
    #: expected calibration error over the bins of ``reliability``
    ece: float | None = None
    #: per probability bin: low, high, count, mean_probability, positive_fraction
    reliability: list[dict[str, Any]] = field(default_factory=list)
    #: why a figure that is None could not be measured on this set (figure -> reason)
    undefined: dict[str, str] = field(default_factory=dict)
    #: the share of scored studies whose input was unlike the model's reference (uncertain),
    #: and the threshold of the score (None: the model has no reference)
    ood_rate: float | None = None
    ood_threshold: float | None = None
    not_analysed: list[dict[str, str]] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_labels(dataset: Path, labels: Path | None = None) -> list[LabelledStudy]:
    """The labelled studies of a set; every problem names the file and line to fix."""
    dataset = Path(dataset)
    if not dataset.is_dir():
        raise TriageError(f"{dataset} is not a folder: give the folder of the labelled studies")
    path = Path(labels) if labels is not None else dataset / LABELS_FILE
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TriageError(
            f"{path} is missing: write a CSV with the columns study,label (one line per study "
            "folder, label 1 or 0)"
        ) from None
    rows = list(csv.DictReader(text.splitlines()))
    if not rows or not {"study", "label"} <= set(rows[0]):
        raise TriageError(f"{path} must have a header line with the columns study,label")
    out = []
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        name = (row.get("study") or "").strip()
        value = (row.get("label") or "").strip().lower()
        if value in _TRUE:
            label = 1
        elif value in _FALSE:
            label = 0
        else:
            raise TriageError(f"{path} line {line}: label {row.get('label')!r} is not 1 or 0")
        folder = dataset / name
        if not name or not folder.is_dir():
            raise TriageError(f"{path} line {line}: no study folder {folder}")
        if name in seen:
            raise TriageError(f"{path} line {line}: study {name} is listed twice")
        seen.add(name)
        out.append(LabelledStudy(name, folder, label))
    return out


def study_series(folder: Path) -> list[SeriesSummary]:
    """The series of a study folder as the catalogue would describe them (keys: file paths).

    A file the receiver would refuse is left out: it never reaches a node's catalogue either.
    """
    by_series: dict[str, tuple[list[pydicom.Dataset], list[str]]] = {}
    for dirpath, _dirs, files in os.walk(folder):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except (InvalidDicomError, OSError, ValueError):
                continue  # not DICOM (a README, a thumbnail): not part of the study
            uid = str(ds.get("SeriesInstanceUID", ""))
            if uid:
                datasets, paths = by_series.setdefault(uid, ([], []))
                datasets.append(ds)
                paths.append(path)
    summaries = [as_catalogued(datasets, paths)[0] for datasets, paths in by_series.values()]
    return [s for s in summaries if s is not None]


def study_input(
    model: TriageModel, folder: Path, device: torch.device, options: AssemblyOptions
) -> tuple[tuple[torch.Tensor, np.ndarray] | None, str]:
    """The model's input of a study folder and its affine, made as triage makes them (the
    series its rule chooses, assembled and preprocessed); None and why when the study has no
    such series or it is not a volume. A ModelError of the preprocessing is raised."""
    series, reason = select_series(model.rule, study_series(folder))
    if series is None:
        return None, reason
    try:
        volume = load_files(series.keys, options)
    except NotAVolumeError as exc:
        return None, f"series {series.series_number or '?'} is not a volume: {exc}"
    return model_input_with_affine(volume.array, volume.affine_lps, model.input, device), ""


def score_study(
    model: TriageModel, folder: Path, device: torch.device, options: AssemblyOptions
) -> tuple[float | None, str, float | None]:
    """The model's probability on a study folder (or None and why it was not analysed), and
    its input's out-of-distribution score when the model has a reference."""
    try:
        made, reason = study_input(model, folder, device, options)
        if made is None:
            return None, reason, None
        x, affine = made
        probability = score(model, x, affine, device).probability
    except ModelError as exc:
        return None, str(exc), None
    ood = None
    if model.reference is not None:
        ood = model.reference.score(input_statistics(x, model.input.pixdim))
    return probability, "", ood


def evaluate(
    model: TriageModel,
    dataset: Path,
    *,
    device: torch.device,
    labels: Path | None = None,
    target_sensitivity: float = 0.9,
    roc_png: Path | None = None,
    options: AssemblyOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> Evaluation:
    """Score every labelled study and measure the model at its threshold, on its ROC and for
    calibration."""
    if not 0.0 < target_sensitivity <= 1.0:
        raise TriageError(f"the target sensitivity must lie in (0, 1], got {target_sensitivity}")
    studies = read_labels(dataset, labels)
    options = options or AssemblyOptions()
    results = []
    for study in studies:
        probability, reason, ood = score_study(model, study.folder, device, options)
        results.append(StudyScore(study.name, study.label, probability, reason, ood))
        if progress is not None:
            progress(study.name)
    scored = [r for r in results if r.probability is not None]
    scores = [float(r.probability) for r in scored if r.probability is not None]
    truth = [r.label for r in scored]
    positives, negatives = sum(truth), len(truth) - sum(truth)
    point = operating_point(scores, truth, model.threshold) if scored else None
    suggested = threshold_for_sensitivity(scores, truth, target_sensitivity) if positives else None
    suggested_point = operating_point(scores, truth, suggested) if suggested is not None else None
    area = auroc(scores, truth) if positives and negatives else None
    png = None
    if roc_png is not None and positives and negatives:
        title = f"{model.name} {model.version}"
        write_roc_png(Path(roc_png), scores, truth, model.threshold, suggested, title)
        png = str(roc_png)
    return Evaluation(
        model=model.name,
        version=model.version,
        dataset=str(dataset),
        studies=len(studies),
        positives=positives,
        negatives=negatives,
        auroc=_round(area),
        threshold=model.threshold,
        sensitivity=_round(point.sensitivity) if point else None,
        specificity=_round(point.specificity) if point else None,
        target_sensitivity=target_sensitivity,
        suggested_threshold=_round(suggested, 6),
        suggested_sensitivity=_round(suggested_point.sensitivity) if suggested_point else None,
        suggested_specificity=_round(suggested_point.specificity) if suggested_point else None,
        histogram=histogram(scores),
        roc_png=png,
        device=str(device),
        positive_rate=_round(point.flagged / len(scores)) if point else None,
        ece=_round(expected_calibration_error(scores, truth)),
        reliability=_reliability(scores, truth),
        undefined=_undefined(positives, negatives),
        ood_rate=_ood_rate(model, scored),
        ood_threshold=model.reference.threshold if model.reference is not None else None,
        not_analysed=[{"study": r.study, "reason": r.reason} for r in results if r.reason],
        scores=[
            {
                "study": r.study,
                "label": r.label,
                "probability": _round(r.probability, 6),
                "ood_score": _round(r.ood_score, 3),
            }
            for r in results
        ],
    )


def _ood_rate(model: TriageModel, scored: list[StudyScore]) -> float | None:
    if model.reference is None or not scored:
        return None
    threshold = model.reference.threshold
    return _round(sum(is_uncertain(r.ood_score, threshold) for r in scored) / len(scored))


def _reliability(scores: list[float], labels: list[int]) -> list[dict[str, Any]]:
    return [
        {
            "low": b.low,
            "high": b.high,
            "count": b.count,
            "mean_probability": _round(b.mean_probability),
            "positive_fraction": _round(b.positive_fraction),
        }
        for b in reliability_curve(scores, labels)
    ]


def _undefined(positives: int, negatives: int) -> dict[str, str]:
    """Why the figures a set cannot give are None, in the words the CLI prints: a folder of
    normal studies is a fair test of specificity and calibration, not of AUROC."""
    if not positives and not negatives:
        return {
            figure: "no study of the set was scored"
            for figure in ("auroc", "sensitivity", "specificity", "positive_rate", "ece")
        }
    out = {}
    if not positives:
        out["auroc"] = "needs positive and negative studies; this set has no positive one"
        out["sensitivity"] = out["suggested_threshold"] = "needs positive studies; none here"
    if not negatives:
        out["auroc"] = "needs positive and negative studies; this set has no negative one"
        out["specificity"] = "needs negative studies; none here"
    return out


def _round(value: float | None, digits: int = 4) -> float | None:
    if value is None or value != value:  # None or NaN
        return None
    return round(float(value), digits)


def write_roc_png(
    path: Path,
    scores: list[float],
    labels: list[int],
    threshold: float,
    suggested: float | None,
    title: str,
) -> None:
    """The ROC curve with the model's operating point (and the suggested one) as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fpr, tpr, _ = roc_curve(scores, labels)
    figure = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    ax.plot(fpr, tpr, color="tab:blue", drawstyle="steps-post", label="ROC")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    points = ((threshold, "threshold", "tab:red"), (suggested, "suggested", "tab:green"))
    for value, name, colour in points:
        if value is None:
            continue
        point = operating_point(scores, labels, value)
        ax.plot(
            1 - point.specificity,
            point.sensitivity,
            "o",
            color=colour,
            label=f"{name} {value:.6g}: sens {point.sensitivity:.2f}, spec {point.specificity:.2f}",
        )
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{title}\nAUROC {auroc(scores, labels):.3f}, n={len(scores)}", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
