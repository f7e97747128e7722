"""Where in the volume a classifier's positive finding comes from: its key point.

A classifier says *that* there is a finding, not *where*. The key point is the centre of the
most salient place of its input by gradient x input (the input's share of the finding's score,
to first order): the saliency is averaged over about 2 cm so that one noisy voxel does not win,
and the key point is the saliency-weighted centre of the region around its maximum that keeps
at least half of it, in patient coordinates (LPS mm). It needs one forward and one backward
pass of the network, so it costs about three inferences whatever the model; it works for any
differentiable network (`TriageModel.network`), MONAI bundle or TorchScript. The key slices of
a Key Object Selection are the source slices nearest to it
(`triage.analysis.source_slices.key_images`).

This is a pointer for the radiologist's eye, not a segmentation. Measured with the shipped
``ich_classifier`` on 38 fresh synthetic head phantoms it found (random grids, lesions of 3-20
mm radius): median 5.1 mm from the lesion centre, 90% within 13 mm, 34 of 38 within the
lesion's radius with the nearest source slice crossing the lesion; the other 4 pointed 13-48 mm
away, at structures the classifier also weighs (tests/unit/analysis/test_saliency.py checks
eight of them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from triage.analysis.inference import model_failure, region_around_peak, run_network
from triage.analysis.model import TriageModel
from triage.errors import ModelError

#: The saliency is averaged over a box about this wide (mm) before its maximum is taken.
SMOOTHING_MM = 20.0
#: The key point is the centre of the region around the maximum at or above this share of it.
REGION_SHARE = 0.5


@dataclass(frozen=True)
class KeyPoint:
    """The most salient place of a model's input for its finding."""

    point_lps: tuple[float, float, float]  # patient coordinates, mm
    voxel: tuple[float, float, float]  # (fractional) index on the model input grid
    seconds: float  # what finding it cost (forward and backward pass)


def key_point(
    model: TriageModel,
    x: torch.Tensor,
    affine_lps: np.ndarray,
    device: torch.device,
    smoothing_mm: float = SMOOTHING_MM,
) -> KeyPoint:
    """The key point of a classifier's finding on its preprocessed input (1, 1, X, Y, Z).

    ``affine_lps`` maps the input's voxel indices to LPS mm (`model_input_with_affine`). A
    segmentation model's verdict already says where its lesion is (`Score.lesion_centre_lps`),
    so only classifiers are accepted. A ModelError says when the network cannot give a
    gradient (e.g. a TorchScript model traced without autograd) or no voxel raises the score.
    """
    if model.task != "classification":
        raise ModelError(
            f"model {model.name} is a {model.task} model: its lesion centre is its key point, "
            "a saliency is only for classifiers"
        )
    affine = np.asarray(affine_lps, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise ModelError(f"affine_lps must be a finite 4x4 matrix, got shape {affine.shape}")
    if x.ndim != 5 or x.shape[:2] != (1, 1):
        raise ModelError(f"model input must be (1, 1, X, Y, Z), got {list(x.shape)}")
    if not smoothing_mm > 0:
        raise ModelError(f"smoothing_mm must be positive, got {smoothing_mm!r}")
    start = time.perf_counter()
    saliency = _gradient_x_input(model, x, device)
    kernel = _box(affine, smoothing_mm)
    smooth = torch.nn.functional.avg_pool3d(
        saliency, kernel, stride=1, padding=tuple(k // 2 for k in kernel), count_include_pad=False
    )
    peak = float(smooth.max())
    if not peak > 0.0:
        raise ModelError(f"model {model.name}: no part of this input raises its finding's score")
    region = region_around_peak(smooth[0, 0], peak * REGION_SHARE)
    weights = smooth[0, 0][region].double()
    centre = (torch.nonzero(region).double() * weights[:, None]).sum(dim=0) / weights.sum()
    i, j, k = (float(v) for v in centre.cpu())
    lps = affine @ np.array([i, j, k, 1.0])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return KeyPoint(
        point_lps=(float(lps[0]), float(lps[1]), float(lps[2])),
        voxel=(i, j, k),
        seconds=time.perf_counter() - start,
    )


def _gradient_x_input(model: TriageModel, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """relu(d score / d input * input) on device, shape of ``x``: what raises the score."""
    inputs = x.detach().to(device=device, dtype=torch.float32).clone().requires_grad_(True)
    with torch.enable_grad():
        out = run_network(model, inputs, device)
        target = _finding_score(out, model.activation, model.output_index, model.name)
        try:
            (gradient,) = torch.autograd.grad(target, inputs)
        except torch.OutOfMemoryError as exc:
            raise model_failure(model.name, device, exc) from exc
        except RuntimeError as exc:  # e.g. "element 0 of tensors does not require grad"
            raise ModelError(
                f"model {model.name} gives no gradient, so it has no key point: {exc}"
            ) from exc
    return (gradient * inputs.detach()).clamp(min=0.0)


def _finding_score(out: torch.Tensor, activation: str, index: int, name: str) -> torch.Tensor:
    """The finding's score, before a monotonic activation: its gradient points the same way
    as the probability's and does not vanish when the network is sure (sigmoid near 1)."""
    flat = out.float().reshape(out.shape[0], -1)
    if index >= flat.shape[1]:
        raise ModelError(
            f"model {name} gave {flat.shape[1]} output(s); its options ask for output index {index}"
        )
    if activation == "softmax":
        return torch.log_softmax(flat[0], dim=0)[index]
    return flat[0, index]  # sigmoid and none: the logit (or raw score) itself


def _box(affine: np.ndarray, width_mm: float) -> tuple[int, int, int]:
    """An odd box size per axis, about ``width_mm`` wide in the input's voxels."""
    voxel = np.linalg.norm(affine[:3, :3], axis=0)
    sizes = [max(1, int(round(width_mm / max(float(v), 1e-6)))) for v in voxel]
    a, b, c = (s if s % 2 else s + 1 for s in sizes)
    return (a, b, c)
