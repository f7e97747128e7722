"""The model input: shape, dtype, device, HU window, independence from the stored orientation."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from triage.analysis import preprocess
from triage.analysis.preprocess import InputSpec, model_input, select_device
from triage.errors import ModelError
from triage.synthetic.phantom import head_phantom

SPEC = InputSpec(pixdim=(4.0, 4.0, 6.0), spatial_size=(48, 56, 24), window=(0.0, 100.0))
CPU = torch.device("cpu")


def _phantom() -> tuple[np.ndarray, np.ndarray]:
    phantom = head_phantom(np.random.default_rng(11), (120, 128, 30), (1.9, 1.8, 5.0), lesion=True)
    return phantom.hu, phantom.affine_lps


def test_shape_dtype_device_and_range() -> None:
    hu, affine = _phantom()
    x = model_input(hu, affine, SPEC, CPU)
    assert type(x) is torch.Tensor
    assert x.shape == (1, 1, 48, 56, 24)
    assert x.dtype == torch.float32
    assert x.device == CPU
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert float(x.max()) == 1.0, "bone is clipped to the top of the window"


def test_window_clips_and_scales() -> None:
    affine = np.diag([2.0, 2.0, 5.0, 1.0])
    spec = InputSpec(pixdim=(2.0, 2.0, 5.0), spatial_size=(10, 10, 4), window=(0.0, 100.0))
    for value, expected in ((-1000.0, 0.0), (25.0, 0.25), (75.0, 0.75), (1500.0, 1.0)):
        hu = np.full((10, 10, 4), value, dtype=np.float32)
        x = model_input(hu, affine, spec, CPU)
        torch.testing.assert_close(x, torch.full_like(x, expected), atol=1e-5, rtol=0)


def test_flipped_and_permuted_storage_give_the_same_input() -> None:
    hu, affine = _phantom()
    reference = model_input(hu, affine, SPEC, CPU)
    n = np.asarray(hu.shape) - 1
    # Same patient, rows stored bottom-up: flip axis 1 and move the origin to the old last row.
    flipped = hu[:, ::-1, :]
    aff_flipped = affine.copy()
    aff_flipped[:3, 1] = -affine[:3, 1]
    aff_flipped[:3, 3] = affine[:3, 3] + n[1] * affine[:3, 1]
    torch.testing.assert_close(model_input(flipped, aff_flipped, SPEC, CPU), reference)
    # Slices stored top-down (flip axis 2) and columns/rows swapped (transpose 0 and 1).
    swapped = np.transpose(hu[:, :, ::-1], (1, 0, 2))
    aff_swapped = affine[:, [1, 0, 2, 3]].copy()
    aff_swapped[:3, 2] = -affine[:3, 2]
    aff_swapped[:3, 3] = affine[:3, 3] + n[2] * affine[:3, 2]
    torch.testing.assert_close(model_input(swapped, aff_swapped, SPEC, CPU), reference)


def test_patient_left_ends_up_at_low_ras_index() -> None:
    # LPS +x is the patient's left; in RAS the first axis runs towards the patient's right.
    hu = np.zeros((40, 40, 10), dtype=np.float32)
    hu[30:38, 15:25, 3:7] = 100.0  # high column index = patient left
    affine = np.diag([2.0, 2.0, 4.0, 1.0])
    spec = InputSpec(pixdim=(2.0, 2.0, 4.0), spatial_size=(40, 40, 10), window=(0.0, 100.0))
    x = model_input(hu, affine, spec, CPU)[0, 0]
    i = torch.nonzero(x > 0.5)[:, 0]
    assert i.numel() > 0 and int(i.max()) < 20


def test_fine_grid_noise_is_averaged_not_sampled() -> None:
    rng = np.random.default_rng(0)
    hu = (30.0 + 10.0 * rng.standard_normal((200, 200, 40))).astype(np.float32)
    affine = np.diag([0.5, 0.5, 1.25, 1.0])
    spec = InputSpec(pixdim=(2.5, 2.5, 5.0), spatial_size=(32, 32, 8), window=(0.0, 100.0))
    x = model_input(hu, affine, spec, CPU)
    assert abs(float(x.mean()) - 0.3) < 0.01
    # One HU sample has sd 0.1 after windowing; a 5 x 5 x 4 block average has sd 0.01.
    assert float(x.std()) < 0.03


def test_large_volume_is_quick() -> None:
    hu = np.full((512, 512, 200), 30.0, dtype=np.float32)
    affine = np.diag([0.45, 0.45, 0.7, 1.0])
    spec = InputSpec(pixdim=(2.5, 2.5, 5.0), spatial_size=(96, 96, 32), window=(0.0, 100.0))
    started = time.perf_counter()
    x = model_input(hu, affine, spec, CPU)
    assert time.perf_counter() - started < 5.0
    assert x.shape == (1, 1, 96, 96, 32)


def test_input_spec_from_dict() -> None:
    spec = InputSpec.from_dict(
        {"pixdim": [2.5, 2.5, 5], "spatial_size": [96, 96, 32], "window": [0, 100]}
    )
    assert spec == InputSpec((2.5, 2.5, 5.0), (96, 96, 32), (0.0, 100.0))
    assert InputSpec.from_dict(spec.as_dict()) == spec


@pytest.mark.parametrize(
    ("bad", "key"),
    [
        ({"spatial_size": [1, 1, 1], "window": [0, 1]}, "pixdim"),
        ({"pixdim": [1, 1], "spatial_size": [1, 1, 1], "window": [0, 1]}, "pixdim"),
        ({"pixdim": [1, 1, 1], "spatial_size": [1.5, 1, 1], "window": [0, 1]}, "spatial_size"),
        ({"pixdim": [1, 1, 1], "spatial_size": [1, 1, 1], "window": "0,1"}, "window"),
        ({"pixdim": [1, 1, 1], "spatial_size": [1, 1, 1], "window": [100, 0]}, "window"),
    ],
)
def test_input_spec_names_the_bad_key(bad: dict[str, object], key: str) -> None:
    with pytest.raises(ModelError, match=key):
        InputSpec.from_dict(bad)


def test_select_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert select_device("cpu") == CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == CPU
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ModelError, match="CUDA is not available"):
            select_device(name)
    with pytest.raises(ModelError, match="unknown device"):
        select_device("tpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda() -> None:
    hu, affine = _phantom()
    device = select_device("cuda")
    x = model_input(hu, affine, SPEC, device)
    assert x.device.type == "cuda"
    torch.testing.assert_close(x.cpu(), model_input(hu, affine, SPEC, CPU), atol=1e-4, rtol=0)


@pytest.mark.parametrize("case", range(24))
def test_cpu_block_averaging_where_the_volume_lies_matches_reorienting_first(case: int) -> None:
    """The CPU averages blocks over the volume as it lies in memory and reorients the small
    result: the same blocks, values and affine as reorienting the whole volume first (what
    the device path does), on any axis order, flips, odd sizes, obliquity and tilt."""
    rng = np.random.default_rng([7, case])
    shape = tuple(int(v) for v in rng.integers(7, 50, 3))
    slices = rng.normal(40, 30, shape[::-1]).astype(np.float32)
    hu = slices.transpose(2, 1, 0)  # [column, row, slice] as an assembled volume lies
    if case % 3 == 0:
        hu = np.ascontiguousarray(hu)
    if case % 5 == 4:
        hu = np.rint(hu).astype(np.int16)
    directions = np.zeros((3, 3))
    directions[rng.permutation(3), range(3)] = rng.choice([-1.0, 1.0], 3)
    angle = rng.uniform(-0.3, 0.3)
    turn = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = turn @ directions * rng.uniform(0.3, 3.0, 3)
    affine[:3, 3] = rng.uniform(-100, 100, 3)
    if case % 4 == 1:
        affine[1, 2] += 0.4  # gantry tilt: a shear
    ras = preprocess.LPS_TO_RAS @ affine
    pixdim = (2.5, 2.5, 5.0)
    whole = MetaTensor(preprocess.on_device(hu, CPU), affine=torch.from_numpy(ras))
    expected = preprocess._box_downsample(preprocess._to_ras(whole), pixdim)
    got = preprocess._ras_blocks_on_host(hu, ras, pixdim)
    if got is None:  # nothing to average: the caller reorients the whole volume
        assert tuple(expected.shape) == tuple(preprocess._to_ras(whole).shape)
        return
    assert tuple(got.shape) == tuple(expected.shape)
    assert torch.allclose(got.as_tensor(), expected.as_tensor(), atol=1e-3, rtol=0)
    assert torch.allclose(got.affine, expected.affine, atol=1e-9, rtol=0)
