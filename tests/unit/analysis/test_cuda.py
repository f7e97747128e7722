"""The device path. On CUDA (skipped without it): the model input, the network and its output
live on the GPU, and the results equal the CPU's within the stated tolerances
(`triage.analysis.inference.CUDA_TOLERANCE`, docs/performance.md). Everywhere: preprocessing
keeps the volume a torch tensor on its device at every step and never turns it into a numpy
array (MONAI falls back to numpy for some modes: on CUDA a trip through the host), and mixed
precision is off on the CPU whatever TRIAGE_AMP says."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from monai.transforms import SpatialPad
from support.paths import PROJECT_ROOT
from torch.overrides import TorchFunctionMode

from triage.analysis import preprocess
from triage.analysis.inference import (
    AMP_DTYPES,
    CUDA_TOLERANCE,
    amp_dtype,
    network_output,
    score,
)
from triage.analysis.model import TriageModel
from triage.analysis.ood import input_statistics
from triage.analysis.preprocess import InputSpec, model_input_with_affine, on_device
from triage.analysis.saliency import key_point
from triage.errors import ModelError
from triage.modelops.bundle import read_bundle
from triage.modelops.reference import bundle_reference
from triage.synthetic.phantom import head_phantom

CPU = torch.device("cpu")
SPEC = InputSpec(pixdim=(2.5, 2.5, 5.0), spatial_size=(96, 96, 32), window=(0.0, 100.0))
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
#: the 4x4 affines may come to the host; nothing the size of an image may
AFFINE_SIZE = 16


class HostTrips(TorchFunctionMode):
    """Records every tensor larger than an affine that is turned into numpy, a list or a host
    copy while it is active."""

    NAMES = ("numpy", "cpu", "tolist", "__array__")

    def __init__(self) -> None:
        super().__init__()
        self.trips: list[tuple[str, tuple[int, ...]]] = []

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        name = getattr(func, "__name__", "")
        subject = args[0] if args else None
        large = isinstance(subject, torch.Tensor) and subject.numel() > AFFINE_SIZE
        if name in self.NAMES and large:
            self.trips.append((name, tuple(subject.shape)))
        return func(*args, **(kwargs or {}))


def _volume() -> tuple[np.ndarray, np.ndarray]:
    # finer than SPEC on every axis (block averaging works), LPS (flipped to RAS), padded in z
    phantom = head_phantom(np.random.default_rng(5), (200, 200, 24), (1.1, 1.1, 2.5), True)
    return phantom.hu, phantom.affine_lps


def test_the_probe_sees_a_numpy_fallback() -> None:
    """MONAI pads with numpy in "symmetric" mode: the probe below must catch that."""
    image = torch.zeros(1, 8, 8, 8)
    with HostTrips() as probe:
        SpatialPad(spatial_size=(12, 12, 12), mode="symmetric")(image)
    assert probe.trips, "the probe does not see a tensor going to numpy"


def test_preprocessing_keeps_the_volume_a_tensor_on_its_device(monkeypatch) -> None:
    steps: list[tuple[str, type, torch.device]] = []

    def recorded(name: str, step: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            out = step(*args, **kwargs)
            steps.append((name, type(out), getattr(out, "device", None)))
            return out

        return run

    def recorded_transform(name: str, cls: type) -> Callable[..., Any]:
        return lambda *a, **k: recorded(name, cls(*a, **k))

    monkeypatch.setattr(preprocess, "_to_ras", recorded("to_ras", preprocess._to_ras))
    monkeypatch.setattr(preprocess, "_box_downsample", recorded("box", preprocess._box_downsample))
    monkeypatch.setattr(
        preprocess, "_ras_blocks_on_host", recorded("ras_blocks", preprocess._ras_blocks_on_host)
    )
    for name in ("Spacing", "ScaleIntensityRange", "ResizeWithPadOrCrop"):
        monkeypatch.setattr(preprocess, name, recorded_transform(name, getattr(preprocess, name)))
    hu, affine = _volume()
    with HostTrips() as probe:
        x, _ = model_input_with_affine(hu, affine, SPEC, CPU)
    assert [s[0] for s in steps] == [
        "ras_blocks",  # the CPU averages blocks where the volume lies, then reorients
        "Spacing",
        "ScaleIntensityRange",
        "ResizeWithPadOrCrop",
    ]
    for name, kind, device in steps:
        assert issubclass(kind, torch.Tensor), f"{name} gave a {kind.__name__}"
        assert device == CPU, f"{name} moved the volume to {device}"
    assert probe.trips == [], "the volume went to numpy or the host between transforms"
    assert type(x) is torch.Tensor and x.device == CPU and x.shape == (1, 1, 96, 96, 32)


def test_the_volume_goes_to_the_device_as_it_lies_in_memory() -> None:
    """An assembled volume is a transposed view of its slices: for a device other than the CPU
    it is copied as it lies (the device reorders it); the CPU gets a contiguous copy."""
    slices = np.arange(4 * 5 * 6, dtype=np.float32).reshape(6, 5, 4)
    hu = slices.transpose(2, 1, 0)  # [column, row, slice], as `Volume.array`
    moved = on_device(hu, torch.device("meta"))  # a device that holds no data to look at
    assert moved.shape == (1, 4, 5, 6)
    assert moved.stride()[1:] == tuple(s // 4 for s in hu.strides)
    on_cpu = on_device(hu, CPU)
    assert on_cpu.is_contiguous()
    assert np.array_equal(on_cpu[0].numpy(), hu)


def test_mixed_precision_is_off_on_the_cpu_whatever_the_setting() -> None:
    for setting in AMP_DTYPES:
        assert amp_dtype(setting, CPU) is None
    assert amp_dtype("float16", torch.device("cuda")) is torch.float16
    assert amp_dtype("off", torch.device("cuda")) is None
    with pytest.raises(ModelError, match="unknown AMP setting"):
        amp_dtype("float8", CPU)
    assert set(CUDA_TOLERANCE) == set(AMP_DTYPES)


def test_an_amp_dtype_changes_nothing_on_the_cpu(classifier: TriageModel) -> None:
    hu, affine = _volume()
    x, a = model_input_with_affine(hu, affine, classifier.input, CPU)
    plain = score(classifier, x, a, CPU).probability
    assert score(classifier, x, a, CPU, torch.float16).probability == plain


# -- on CUDA -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier() -> TriageModel:
    return _model("ich_classifier")


@pytest.fixture(scope="module")
def segmenter() -> TriageModel:
    return _model("lesion_segmenter")


def _model(name: str) -> TriageModel:
    import dataclasses

    folder = PROJECT_ROOT / "models" / name
    return dataclasses.replace(read_bundle(folder).model(), reference=bundle_reference(folder))


@needs_cuda
@pytest.mark.parametrize("name", ["ich_classifier", "lesion_segmenter"])
def test_on_cuda_the_tensors_live_on_the_gpu_and_agree_with_the_cpu(
    name: str, classifier: TriageModel, segmenter: TriageModel
) -> None:
    model = classifier if name == "ich_classifier" else segmenter
    cuda = torch.device("cuda")
    hu, affine = _volume()
    x, a = model_input_with_affine(hu, affine, model.input, cuda)
    assert x.is_cuda and x.dtype == torch.float32
    network = model.network(cuda)
    assert all(p.is_cuda for p in network.parameters())
    assert all(b.is_cuda for b in network.buffers())
    devices: list[torch.device] = []
    hook = network.register_forward_hook(
        lambda module, inputs, out: devices.extend([inputs[0].device, out.device])
    )
    try:
        out = network_output(model, x, cuda)
        verdict = score(model, x, a, cuda)
    finally:
        hook.remove()
    assert out.is_cuda, "the output before its reduction to a probability"
    assert devices and all(d.type == "cuda" for d in devices)

    x_cpu, a_cpu = model_input_with_affine(hu, affine, model.input, CPU)
    assert float((x.cpu() - x_cpu).abs().max()) <= 1e-4
    np.testing.assert_allclose(a, a_cpu, atol=1e-9)
    expected = score(model, x_cpu, a_cpu, CPU)
    assert abs(verdict.probability - expected.probability) <= CUDA_TOLERANCE["off"]
    assert model.reference is not None
    ood = model.reference.score(input_statistics(x, model.input.pixdim))
    ood_cpu = model.reference.score(input_statistics(x_cpu, model.input.pixdim))
    assert abs(ood - ood_cpu) <= 1e-2
    if model.task == "classification":
        point = np.asarray(key_point(model, x, a, cuda).point_lps)
        point_cpu = np.asarray(key_point(model, x_cpu, a_cpu, CPU).point_lps)
        assert np.linalg.norm(point - point_cpu) <= 2.5


@needs_cuda
@pytest.mark.parametrize("setting", ["float16", "bfloat16"])
def test_on_cuda_mixed_precision_stays_within_its_tolerance(
    setting: str, classifier: TriageModel, segmenter: TriageModel
) -> None:
    cuda = torch.device("cuda")
    amp = amp_dtype(setting, cuda)
    hu, affine = _volume()
    out = network_output(classifier, model_input_with_affine(hu, affine, SPEC, cuda)[0], cuda, amp)
    assert out.dtype == amp, "the network did not run in reduced precision"
    for model in (classifier, segmenter):
        x, a = model_input_with_affine(hu, affine, model.input, cuda)
        full = score(model, x, a, cuda).probability
        reduced = score(model, x, a, cuda, amp).probability
        assert abs(reduced - full) <= CUDA_TOLERANCE[setting]
