"""The trial run at registration: does the bundle load and give what its options need?

The network is built and its weights loaded on the device the node uses, run on an input of
the shape it will get in production (the options' ``input.spatial_size``, one channel), timed,
and its output checked with the pipeline's own scoring code. Any problem raises ModelError
naming it: weights that do not fit, a network that fails on the input, an output of the wrong
shape, or a shape other than the bundle's metadata declares.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import re
import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from triage.analysis.inference import Score, network_output, score
from triage.analysis.model import TriageModel
from triage.errors import ModelError
from triage.modelops.bundle import Bundle

WARM_RUNS = 3


@dataclass(frozen=True)
class TrialRun:
    """What the trial run measured; kept with the version and shown by `triage models show`."""

    device: str
    input_shape: list[int]
    output_shape: list[int]
    #: seconds for one input, median of WARM_RUNS runs after a first (cold) one
    latency_s: float
    first_run_s: float
    #: of one warm run; CUDA: peak allocated by torch; CPU: growth of peak resident memory
    peak_memory_bytes: int | None
    memory_measure: str
    parameters: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def trial_run(bundle: Bundle, device: torch.device) -> TrialRun:
    """Load and run the bundle once cold and WARM_RUNS times warm on ``device``."""
    model = bundle.model()
    network = model.network(device)  # loaded here: a bundle that does not load fails first
    size = tuple(model.input.spatial_size)
    _check_declared_input(bundle.metadata, model, size)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand((1, 1, *size), generator=generator).to(device)
    affine = np.diag([*model.input.pixdim, 1.0])

    t0 = time.perf_counter()
    out = network_output(model, x, device)
    _synchronize(device)
    first = time.perf_counter() - t0
    _check_output(bundle, model, out, size)
    del out
    memory = _PeakMemory(device)  # on the second run: one-time set-up is not counted
    out = network_output(model, x, device)
    _synchronize(device)
    peak, measure = memory.peak()
    times = []
    for _ in range(WARM_RUNS):
        t0 = time.perf_counter()
        result: Score = score(model, x, affine, device)
        _synchronize(device)
        times.append(time.perf_counter() - t0)
    del result
    return TrialRun(
        device=str(device),
        input_shape=list(x.shape),
        output_shape=list(out.shape),
        latency_s=round(statistics.median(times), 4),
        first_run_s=round(first, 4),
        peak_memory_bytes=peak,
        memory_measure=measure,
        parameters=sum(p.numel() for p in network.parameters()),
    )


def _check_declared_input(
    metadata: Mapping[str, Any], model: TriageModel, size: tuple[int, ...]
) -> None:
    """The pipeline feeds one channel; a concrete declared shape must be what the network sees."""
    image = _declared(metadata, "inputs")
    if not image:
        return
    channels = image.get("num_channels")
    if isinstance(channels, int) and channels != 1:
        raise ModelError(
            f"configs/metadata.json declares {channels} input channels; the pipeline feeds one "
            "(a CT or MR volume)"
        )
    shape = image.get("spatial_shape")
    seen = model.sliding_window.roi_size if model.sliding_window is not None else size
    if isinstance(shape, list) and _concrete(shape) and len(shape) == 3 and shape != list(seen):
        where = "sliding-window roi_size" if model.sliding_window is not None else "input"
        raise ModelError(
            f"configs/metadata.json declares input spatial_shape {list(shape)} but the "
            f"options give the network {list(seen)} ({where}); make input.spatial_size "
            "(or sliding_window.roi_size) match the bundle"
        )


def _check_output(bundle: Bundle, model: TriageModel, out: torch.Tensor, size: tuple) -> None:
    """The pipeline's scoring accepts the output, and it has the channels the bundle declares."""
    affine = np.diag([*model.input.pixdim, 1.0])
    try:
        if model.task == "segmentation":
            from triage.analysis.inference import segmentation_score

            assert model.segmentation is not None
            segmentation_score(
                out,
                size,
                model.activation,
                model.output_index,
                model.segmentation,
                affine,
                model.name,
            )
        else:
            from triage.analysis.inference import classification_probability

            if out.ndim > 2 and int(np.prod(out.shape[2:])) > 1:
                raise ModelError(
                    f"model {model.name} gave an output of shape {list(out.shape)}, a map rather "
                    'than one value per class: is it a segmentation model ("task": '
                    '"segmentation" in its options)?'
                )
            classification_probability(out, model.activation, model.output_index, model.name)
    except ModelError as exc:
        raise ModelError(f"wrong output shape: {exc}") from None
    pred = _declared(bundle.metadata, "outputs")
    channels = pred.get("num_channels") if pred else None
    if isinstance(channels, int) and out.ndim >= 2 and out.shape[1] != channels:
        raise ModelError(
            f"wrong output shape: the network gives {out.shape[1]} output channel(s), "
            f"configs/metadata.json declares {channels}"
        )


def _declared(metadata: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    formats = metadata.get("network_data_format")
    if not isinstance(formats, Mapping):
        return None
    entries = formats.get(kind)
    if not isinstance(entries, Mapping) or not entries:
        return None
    first = next(iter(entries.values()))
    return first if isinstance(first, Mapping) else None


def _concrete(shape: Any) -> bool:
    return isinstance(shape, list) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in shape
    )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _PeakMemory:
    """Peak memory of what runs between construction and `peak()`.

    On CUDA: torch's peak allocated bytes. On Linux CPUs: how far the process's peak resident
    memory (VmHWM, reset through /proc/self/clear_refs) rose above its resident memory at the
    start, after the C library handed freed memory back to the system (malloc_trim); memory it
    could not hand back is not counted, so it is a lower bound. Elsewhere: not measured.
    """

    _STATUS = Path("/proc/self/status")

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start = 0
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            self.start = torch.cuda.memory_allocated(device)
            return
        gc.collect()
        with contextlib.suppress(OSError, AttributeError):  # not glibc: a looser lower bound
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.start = self._status("VmRSS")
        except (OSError, ValueError):
            self.start = -1

    def _status(self, key: str) -> int:
        match = re.search(rf"^{key}:\s+(\d+) kB", self._STATUS.read_text(), flags=re.M)
        if match is None:
            raise ValueError(key)
        return int(match[1]) * 1024

    def peak(self) -> tuple[int | None, str]:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) - self.start
            return int(peak), "CUDA peak allocated"
        if self.start < 0:
            return None, "not measured"
        try:
            return max(0, self._status("VmHWM") - self.start), "peak resident memory growth"
        except (OSError, ValueError):
            return None, "not measured"
