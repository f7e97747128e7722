"""Is this input like what the model learnt from? An out-of-distribution (OOD) score.

A model answers every input, even one unlike anything it was trained on (another body region,
a scanner whose rescale puts brain at 1000 HU, a texture it never saw), and its probability
then means nothing. This check is the model's *reference*: statistics of the preprocessed
inputs it was validated on, recorded by the registry when the version is registered. Each
input gets a score beside the probability: the Mahalanobis distance of its statistics from
the reference ones. Above the reference's threshold the result is *uncertain: input unlike
the training data*, and it never makes a study urgent on its own (`triage.analysis.priority`).

The statistics are those of the network's input (after resampling and windowing, so the same
for every model kind and every bundle, with no hook into the network):

- how the tissue in the window is spread: its mean, spread and an 8-bin histogram;
- how much of the tissue lies at or above the window (bone, calcification, metal);
- the texture: the noise (the median size of the difference of each voxel from its in-plane
  neighbours) and the mean edge strength, which differ between reconstruction kernels;
- the size of the body part: its median width and depth in mm, clipped by the input's field.

Voxels below the window (air, fat, padding of the input grid) are left out, so a short series
padded to the input size scores like a long one. The covariance is shrunk towards its diagonal,
so a reference of a few tens of studies gives a stable distance; the threshold is set from the
reference itself, from each study's distance to the others (leave one out), so a study like
them scores below it. docs/ood.md says how it was chosen and what it was measured on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from triage.errors import ModelError

FEATURES = (
    "mean",
    "spread",
    *(f"histogram_{i}" for i in range(8)),
    "above_window",
    "noise",
    "edges",
    "width_mm",
    "depth_mm",
)
#: the threshold is this many times the largest leave-one-out distance within the reference
#: (studies like the reference fall within it; the margin covers a reference of a few tens)
THRESHOLD_MARGIN = 1.5
#: the fewest reference studies a threshold is set from
MIN_REFERENCE = 8
#: the least shrinkage of the covariance towards its diagonal
MIN_SHRINKAGE = 0.2
_EPS = 1e-6


def input_statistics(x: torch.Tensor, pixdim: Sequence[float]) -> np.ndarray:
    """The statistics of one preprocessed model input (1, 1, X, Y, Z) in [0, 1], in the order
    of `FEATURES`; ``pixdim`` is the input's voxel size in mm (x, y, z)."""
    v = x.detach().float()[0, 0]
    tissue = v > 0.0
    inside = tissue & (v < 1.0)
    count = int(tissue.sum())
    if count == 0:  # nothing at or above the window's lower end: an empty or absurd input
        return np.zeros(len(FEATURES))
    values = v[inside]
    n_inside = max(int(inside.sum()), 1)
    mean = float(values.mean()) if values.numel() else 1.0
    spread = float(values.std()) if values.numel() > 1 else 0.0
    hist = torch.histc(values, bins=8, min=0.0, max=1.0) / n_inside if values.numel() else None
    histogram = hist.cpu().numpy().tolist() if hist is not None else [0.0] * 8
    above = float((v >= 1.0).sum()) / count
    # in-plane neighbours: the difference of a voxel from the mean of its 4 neighbours
    neighbours = (
        torch.roll(v, 1, 0) + torch.roll(v, -1, 0) + torch.roll(v, 1, 1) + torch.roll(v, -1, 1)
    ) / 4.0
    calm = inside & (torch.roll(inside, 1, 0) & torch.roll(inside, -1, 0))
    calm &= torch.roll(inside, 1, 1) & torch.roll(inside, -1, 1)
    residual = (v - neighbours)[calm].abs()
    noise = float(residual.median()) if residual.numel() else 0.0
    gx = (torch.roll(v, -1, 0) - v).abs()
    gy = (torch.roll(v, -1, 1) - v).abs()
    edges = float((gx + gy)[tissue].mean())
    width, depth = _extent_mm(tissue, pixdim)
    return np.array([mean, spread, *histogram, above, noise, edges, width, depth], dtype=np.float64)


def _extent_mm(tissue: torch.Tensor, pixdim: Sequence[float]) -> tuple[float, float]:
    """The median width (x) and depth (y) in mm of the tissue over the slices that hold some."""
    per_slice = tissue.sum(dim=(0, 1)) > 20
    if not bool(per_slice.any()):
        return 0.0, 0.0
    t = tissue[:, :, per_slice]
    xs = t.any(dim=1)  # (X, Z')
    ys = t.any(dim=0)  # (Y, Z')
    width = xs.sum(dim=0).float().median() * float(pixdim[0])
    depth = ys.sum(dim=0).float().median() * float(pixdim[1])
    return float(width), float(depth)


@dataclass(frozen=True)
class Reference:
    """What a model's inputs look like: the mean and shrunk inverse covariance of their
    statistics, the threshold of the distance, and where they came from."""

    mean: tuple[float, ...]
    inverse_covariance: tuple[tuple[float, ...], ...]
    threshold: float
    studies: int
    source: str
    features: tuple[str, ...] = FEATURES

    @classmethod
    def fit(cls, statistics: Sequence[np.ndarray], source: str) -> Reference:
        """The reference of these inputs' statistics (one row per study, `FEATURES` order)."""
        data = np.asarray(statistics, dtype=np.float64)
        if data.ndim != 2 or data.shape[1] != len(FEATURES):
            raise ModelError(f"reference statistics must be rows of {len(FEATURES)} numbers")
        if data.shape[0] < MIN_REFERENCE:
            raise ModelError(
                f"a reference needs at least {MIN_REFERENCE} studies, got {data.shape[0]}: "
                "give more studies like those the model is meant for"
            )
        mean, inverse = _moments(data)
        loo = []
        for i in range(data.shape[0]):
            rest = np.delete(data, i, axis=0)
            m, inv = _moments(rest)
            loo.append(_distance(data[i], m, inv))
        threshold = THRESHOLD_MARGIN * max(loo)
        return cls(
            mean=tuple(float(v) for v in mean),
            inverse_covariance=tuple(tuple(float(v) for v in row) for row in inverse),
            threshold=float(threshold),
            studies=int(data.shape[0]),
            source=source,
        )

    def score(self, statistics: np.ndarray) -> float:
        """The input's distance from the reference (0 at its mean; above ``threshold``: unlike)."""
        return _distance(
            np.asarray(statistics, dtype=np.float64),
            np.asarray(self.mean),
            np.asarray(self.inverse_covariance),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "mean": list(self.mean),
            "inverse_covariance": [list(r) for r in self.inverse_covariance],
            "threshold": self.threshold,
            "studies": self.studies,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Reference:
        try:
            features = tuple(str(f) for f in d["features"])
            ref = cls(
                mean=tuple(float(v) for v in d["mean"]),
                inverse_covariance=tuple(
                    tuple(float(v) for v in row) for row in d["inverse_covariance"]
                ),
                threshold=float(d["threshold"]),
                studies=int(d["studies"]),
                source=str(d.get("source", "")),
                features=features,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"the model's input reference is unreadable: {exc}") from exc
        if features != FEATURES:
            raise ModelError(
                "the model's input reference was made with other statistics "
                f"({', '.join(features)}); make it again with this version of triage"
            )
        n = len(FEATURES)
        if len(ref.mean) != n or any(len(r) != n for r in ref.inverse_covariance):
            raise ModelError(f"the model's input reference must hold {n} statistics")
        if not math.isfinite(ref.threshold) or ref.threshold <= 0:
            raise ModelError("the model's input reference has no usable threshold")
        return ref


def _moments(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and inverse of the covariance shrunk towards its diagonal (more with fewer rows)."""
    mean = data.mean(axis=0)
    centred = data - mean
    cov = centred.T @ centred / max(data.shape[0] - 1, 1)
    diagonal = np.diag(np.maximum(np.diag(cov), _EPS))
    shrink = min(1.0, max(MIN_SHRINKAGE, data.shape[1] / data.shape[0]))
    shrunk = (1.0 - shrink) * cov + shrink * diagonal
    return mean, np.linalg.pinv(shrunk)


def _distance(row: np.ndarray, mean: np.ndarray, inverse: np.ndarray) -> float:
    d = row - mean
    return float(math.sqrt(max(float(d @ inverse @ d), 0.0)))
