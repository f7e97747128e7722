"""Metrics of a scored, labelled set: AUROC, sensitivity, specificity, ROC, and calibration.

Plain NumPy on purpose: the training scripts in models/, `triage models evaluate` and the
notebook compute their figures with the same few functions.

Calibration says whether a probability can be read as one: of the studies scored about 0.8,
about 80 % should have the finding. The reliability curve puts the mean predicted probability of
each probability bin next to the share of its studies that are positive; the expected
calibration error (ECE) is the gap between the two, averaged over the bins weighted by how many
studies each holds (0: calibrated; an over-confident model has a large one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Bin edges of the score histograms (`show`: live scores next to the evaluation's) and of the
#: calibration figures: ten equal-width bins over probability, the last one holding 1.0
HISTOGRAM_EDGES = tuple(i / 10 for i in range(11))


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    sensitivity: float
    specificity: float
    true_positives: int
    false_negatives: int
    true_negatives: int
    false_positives: int

    @property
    def flagged(self) -> int:
        """How many studies are at or above the threshold (positive results)."""
        return self.true_positives + self.false_positives


@dataclass(frozen=True)
class ReliabilityBin:
    """One probability bin of the reliability curve; the means are None for an empty bin."""

    low: float
    high: float
    count: int
    mean_probability: float | None
    positive_fraction: float | None


def _arrays(scores: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError("scores and labels must be two lists of the same length")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (negative) or 1 (positive)")
    return s, y


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); NaN without both classes."""
    s, y = _arrays(scores, labels)
    pos, neg = s[y == 1], s[y == 0]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (pos.size * neg.size))


def operating_point(
    scores: Sequence[float], labels: Sequence[int], threshold: float
) -> OperatingPoint:
    """Sensitivity and specificity when a score at or above ``threshold`` is positive."""
    s, y = _arrays(scores, labels)
    flagged = s >= threshold
    tp = int((flagged & (y == 1)).sum())
    fn = int((~flagged & (y == 1)).sum())
    tn = int((~flagged & (y == 0)).sum())
    fp = int((flagged & (y == 0)).sum())
    return OperatingPoint(
        threshold=float(threshold),
        sensitivity=tp / (tp + fn) if tp + fn else float("nan"),
        specificity=tn / (tn + fp) if tn + fp else float("nan"),
        true_positives=tp,
        false_negatives=fn,
        true_negatives=tn,
        false_positives=fp,
    )


def threshold_for_sensitivity(
    scores: Sequence[float], labels: Sequence[int], target: float
) -> float:
    """The highest threshold whose sensitivity (score >= threshold among positives) is at least
    ``target``: the most specific operating point that still finds that share of positives."""
    s, y = _arrays(scores, labels)
    pos = np.sort(s[y == 1])
    if pos.size == 0:
        raise ValueError("no positive cases: a threshold for a sensitivity needs some")
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target sensitivity must lie in (0, 1], got {target}")
    allowed_misses = int(np.floor((1.0 - target) * pos.size + 1e-9))
    return float(pos[allowed_misses])


def roc_curve(
    scores: Sequence[float], labels: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rate, true-positive rate and threshold at every distinct score, from
    (0, 0) (nothing flagged) to (1, 1) (everything flagged)."""
    s, y = _arrays(scores, labels)
    thresholds = np.concatenate([[np.inf], np.unique(s)[::-1]])
    pos, neg = max(int((y == 1).sum()), 1), max(int((y == 0).sum()), 1)
    tpr = np.array([((s >= t) & (y == 1)).sum() / pos for t in thresholds])
    fpr = np.array([((s >= t) & (y == 0)).sum() / neg for t in thresholds])
    return fpr, tpr, thresholds


def histogram(scores: Sequence[float]) -> list[int]:
    """Counts of scores in ten bins of width 0.1 (the last bin holds 1.0)."""
    counts, _ = np.histogram(np.clip(np.asarray(scores, dtype=np.float64), 0, 1), HISTOGRAM_EDGES)
    return [int(c) for c in counts]


def _bin_of(scores: np.ndarray) -> np.ndarray:
    """The histogram bin of each score (the same bins as `histogram`; 1.0 in the last)."""
    edges = np.asarray(HISTOGRAM_EDGES)
    index = np.searchsorted(edges, np.clip(scores, 0, 1), side="right") - 1
    return np.minimum(index, len(edges) - 2)


def reliability_curve(scores: Sequence[float], labels: Sequence[int]) -> list[ReliabilityBin]:
    """Per probability bin: its range, how many studies, their mean probability and the share
    of them that are positive. A calibrated model's points lie on the diagonal."""
    s, y = _arrays(scores, labels)
    index = _bin_of(s)
    out = []
    for i in range(len(HISTOGRAM_EDGES) - 1):
        inside = index == i
        count = int(inside.sum())
        out.append(
            ReliabilityBin(
                low=HISTOGRAM_EDGES[i],
                high=HISTOGRAM_EDGES[i + 1],
                count=count,
                mean_probability=float(s[inside].mean()) if count else None,
                positive_fraction=float(y[inside].mean()) if count else None,
            )
        )
    return out


def expected_calibration_error(scores: Sequence[float], labels: Sequence[int]) -> float:
    """The gap between mean probability and positive share, averaged over the bins of the
    reliability curve weighted by their counts; NaN for an empty set. Needs no positive study:
    on a set of normals it is the mean probability the model gives them."""
    bins = reliability_curve(scores, labels)
    total = sum(b.count for b in bins)
    if not total:
        return float("nan")
    return float(
        sum(
            b.count * abs(b.mean_probability - b.positive_fraction)
            for b in bins
            if b.mean_probability is not None and b.positive_fraction is not None
        )
        / total
    )
