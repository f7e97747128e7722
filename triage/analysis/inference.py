"""Run a model on its input on the device: the network (whole or by sliding window), then the
finding's probability from a classifier's output or from a segmentation mask."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from triage.analysis.model import SegmentationScore, TriageModel
from triage.errors import ModelError

# PyTorch's CPU allocator reports running out of memory as a plain RuntimeError
_CPU_OUT_OF_MEMORY = re.compile(r"can't allocate memory: you tried to allocate (\d+) bytes")
#: TRIAGE_AMP: the reduced precision the networks may run in on CUDA (mixed precision)
AMP_DTYPES = {"off": None, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: how far a probability on CUDA may be from the CPU's, by TRIAGE_AMP. "off" allows for the
#: TF32 convolutions cuDNN runs by default; the autocast ones are four times the largest
#: difference autocast made on the CPU (12 phantoms, both shipped models: float16 1.2e-3,
#: bfloat16 5.5e-3). benchmarks/gpu_check.py measures them on a GPU.
CUDA_TOLERANCE = {"off": 1e-3, "float16": 5e-3, "bfloat16": 2e-2}


@dataclass(frozen=True)
class Score:
    """A model's verdict on one input: the probability of its finding and, for a segmentation
    model that found a lesion, the lesion's volume and centre (LPS mm, patient coordinates).

    A segmentation model's verdict also keeps the lesion itself, so that a DICOM Segmentation
    can show it: ``lesion_mask`` is a bool array on the model input grid (all False when no
    voxel reached the threshold) and ``mask_affine_lps`` maps its voxel indices to LPS mm
    (`triage.analysis.source_slices.mask_on_source_slices` puts it on the source slices).
    """

    probability: float
    lesion_volume_ml: float | None = None
    lesion_centre_lps: tuple[float, float, float] | None = None
    lesion_mask: np.ndarray | None = field(default=None, repr=False, compare=False)
    mask_affine_lps: np.ndarray | None = field(default=None, repr=False, compare=False)


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a TRIAGE_AMP setting on ``device``: None (full float32) unless
    the device is CUDA and the setting is "float16" or "bfloat16". On the CPU it is always
    off, so CPU results never depend on it."""
    if setting not in AMP_DTYPES:
        raise ModelError(f'unknown AMP setting "{setting}": use {", ".join(AMP_DTYPES)}')
    return AMP_DTYPES[setting] if device.type == "cuda" else None


@contextlib.contextmanager
def precision(device: torch.device, amp: torch.dtype | None) -> Iterator[None]:
    """Run what is inside in mixed precision (torch.autocast) when ``amp`` is set on CUDA;
    otherwise as it is, in float32."""
    if amp is None or device.type != "cuda":
        yield
        return
    with torch.autocast(device_type="cuda", dtype=amp):
        yield


def probability(model: TriageModel, x: torch.Tensor, device: torch.device) -> float:
    """The model's probability for its finding, given its preprocessed input on device."""
    return score(model, x, None, device).probability


def score(
    model: TriageModel,
    x: torch.Tensor,
    affine_lps: np.ndarray | None,
    device: torch.device,
    amp: torch.dtype | None = None,
) -> Score:
    """Run the model on its preprocessed input (1, 1, X, Y, Z) on device and score the output.

    ``affine_lps`` maps the input's voxel indices to LPS mm (`model_input_with_affine`); a
    segmentation model needs it to say where the lesion is and how large it is. ``amp``: the
    network runs in that reduced precision on CUDA (`amp_dtype`); its output is scored in
    float32 either way.
    """
    out = network_output(model, x, device, amp)
    if model.task == "segmentation":
        assert model.segmentation is not None
        verdict = segmentation_score(
            out,
            tuple(x.shape[2:]),
            model.activation,
            model.output_index,
            model.segmentation,
            np.eye(4) if affine_lps is None else affine_lps,
            model.name,
        )
        if affine_lps is None:  # the mask's place in the patient is unknown
            return dataclasses.replace(verdict, mask_affine_lps=None)
        return verdict
    return Score(classification_probability(out, model.activation, model.output_index, model.name))


def network_output(
    model: TriageModel, x: torch.Tensor, device: torch.device, amp: torch.dtype | None = None
) -> torch.Tensor:
    """The network's raw output on ``x``: whole, or by sliding window when the model says so."""
    # loaded outside inference mode: weights made in it could never take part in a gradient
    # (the key point of a classifier, `triage.analysis.saliency`)
    model.network(device)
    with torch.inference_mode():
        return run_network(model, x, device, amp)


def run_network(
    model: TriageModel, x: torch.Tensor, device: torch.device, amp: torch.dtype | None = None
) -> torch.Tensor:
    """`network_output` in the caller's autograd mode: a saliency needs the gradients."""
    network = model.network(device)
    try:
        with precision(device, amp):
            if model.sliding_window is not None:
                window = model.sliding_window
                out = sliding_window_inference(
                    x,
                    roi_size=window.roi_size,
                    sw_batch_size=window.sw_batch_size,
                    predictor=network,
                    overlap=window.overlap,
                    mode=window.mode,
                )
            else:
                out = network(x)
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        raise model_failure(model.name, device, exc) from exc
    return main_output(out, model.name)


def model_failure(name: str, device: torch.device, exc: RuntimeError) -> ModelError:
    """The error to raise when running model ``name`` failed: out of memory said as such."""
    if isinstance(exc, torch.OutOfMemoryError):
        return ModelError(f"model {name} ran out of memory on {device}")
    asked = _CPU_OUT_OF_MEMORY.search(str(exc))
    if asked:
        return ModelError(
            f"model {name} ran out of memory on {device} (it asked for "
            f"{int(asked[1]) / 2**30:.1f} GiB at once)"
        )
    return ModelError(f"model {name} failed on this input: {exc}")


def main_output(out: object, name: str = "model") -> torch.Tensor:
    """The one tensor a network's forward() gave (the first of several, as deep supervision
    gives them); a ModelError when it gave none."""
    if isinstance(out, tuple | list) and out and isinstance(out[0], torch.Tensor):
        out = out[0]  # networks with deep supervision return the main output first
    if not isinstance(out, torch.Tensor):
        raise ModelError(
            f"model {name} returned {type(out).__name__}, not a tensor: triage needs "
            "a network whose forward() returns one tensor"
        )
    return out


def classification_probability(
    out: torch.Tensor, activation: str, index: int, name: str = "model"
) -> float:
    """The finding's probability from a classifier's output (N, C) or (N, C, 1, ...)."""
    out = out.float().reshape(out.shape[0], -1)
    if index >= out.shape[1]:
        raise ModelError(
            f"model {name} gave {out.shape[1]} output(s); its options ask for output index {index}"
        )
    if activation == "sigmoid":
        prob = torch.sigmoid(out[0, index])
    elif activation == "softmax":
        prob = torch.softmax(out[0], dim=0)[index]
    else:
        prob = out[0, index]
    return _probability(float(prob.cpu()), name)


def segmentation_score(
    out: torch.Tensor,
    input_size: tuple[int, ...],
    activation: str,
    index: int,
    settings: SegmentationScore,
    affine_lps: np.ndarray,
    name: str = "model",
) -> Score:
    """The finding's probability, lesion volume, centre and mask from a segmentation output.

    ``out`` is (1, C, X, Y, Z) over the input grid. The lesion is the connected region of
    voxels of channel ``index`` at or above the voxel threshold that holds the most probable
    voxel; its volume scores it (``lesion_volume``), or the most probable voxel does
    (``max_probability``). The region itself comes back as ``lesion_mask`` (X, Y, Z) with
    ``affine_lps`` as its ``mask_affine_lps``.
    """
    if out.ndim != 5 or tuple(out.shape[2:]) != tuple(input_size):
        raise ModelError(
            f"model {name} gave an output of shape {list(out.shape)}; a segmentation model "
            f"must give (1, channels, {', '.join(map(str, input_size))}), one value per input "
            "voxel"
        )
    if index >= out.shape[1]:
        raise ModelError(
            f"model {name} gave {out.shape[1]} channel(s); its options ask for channel {index}"
        )
    logits = out[0].float()
    if activation == "softmax":
        probs = torch.softmax(logits, dim=0)[index]
    elif activation == "sigmoid":
        probs = torch.sigmoid(logits[index])
    else:
        probs = logits[index]
    peak = _probability(float(probs.max().cpu()), name)
    lesion = region_around_peak(probs, settings.voxel_threshold)
    voxels = int(lesion.sum())
    if voxels == 0:
        volume_ml = 0.0
        centre = None
    else:
        voxel_ml = abs(float(np.linalg.det(affine_lps[:3, :3]))) / 1000.0
        volume_ml = voxels * voxel_ml
        ijk = torch.nonzero(lesion).double().mean(dim=0).cpu().numpy()
        lps = affine_lps @ np.array([*ijk, 1.0])
        centre = (float(lps[0]), float(lps[1]), float(lps[2]))
    if settings.score == "lesion_volume":
        value = volume_ml / (volume_ml + settings.half_volume_ml)
    else:
        value = peak
    mask = lesion.cpu().numpy().astype(bool, copy=False)
    affine = np.array(affine_lps, dtype=np.float64)  # a copy: the caller's array may change
    return Score(value, volume_ml, centre, lesion_mask=mask, mask_affine_lps=affine)


def region_around_peak(probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """Voxels >= threshold connected (26-neighbourhood) to the most probable voxel."""
    mask = probs >= threshold
    if not bool(mask.any()):
        return mask
    # grown within the box that holds every voxel >= threshold: the same region, less work
    found = torch.nonzero(mask)
    low, high = found.min(dim=0).values, found.max(dim=0).values + 1
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))
    inside = mask[box].to(probs.dtype)
    region = torch.zeros_like(inside)
    region.view(-1)[int(torch.argmax(probs[box]))] = 1.0
    count = 1
    while True:  # grow by one voxel a step; stops when the region no longer grows
        grown = torch.nn.functional.max_pool3d(region[None, None], 3, 1, 1)[0, 0] * inside
        grown_count = int(grown.sum())
        if grown_count == count:
            out = torch.zeros_like(mask)
            out[box] = grown > 0
            return out
        region, count = grown, grown_count


def _probability(value: float, name: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise ModelError(f"model {name} gave {value}, which is not a probability")
    return value
