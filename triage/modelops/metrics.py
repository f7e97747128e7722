"""Operating-point metrics of a scored, labelled set: AUROC, sensitivity, specificity, ROC.

Plain NumPy on purpose: the training scripts in models/, `triage models evaluate` and the
notebook compute their figures with the same few functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Bin edges of the score histograms (`show`: live scores next to the evaluation's)
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
