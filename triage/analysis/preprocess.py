"""The model input: a HU volume resampled, windowed and cropped on the device, with MONAI.

Training (models/train_ich_classifier.py) and the pipeline both call `model_input`, so a model
sees exactly the same preprocessing in production as it saw in training. The work runs on the
device the model runs on: CUDA when present, else the CPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import ResizeWithPadOrCrop, ScaleIntensityRange, Spacing

from triage.errors import ModelError

#: LPS (DICOM) <-> RAS (MONAI, NIfTI) world coordinates: negate x and y.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class InputSpec:
    """What a model expects: voxel size in mm (RAS order), array size, and HU window."""

    pixdim: tuple[float, float, float]
    spatial_size: tuple[int, int, int]
    window: tuple[float, float]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InputSpec:
        """Read the "input" section of a model's triage.json."""
        if not isinstance(d, Mapping):
            raise ModelError(f"model input spec must be a JSON object, got {type(d).__name__}")
        p = _numbers(d, "pixdim", 3, float)
        n = _numbers(d, "spatial_size", 3, int)
        w = _numbers(d, "window", 2, float)
        pixdim, size, window = (p[0], p[1], p[2]), (n[0], n[1], n[2]), (w[0], w[1])
        if min(pixdim) <= 0:
            raise ModelError(f'model input "pixdim" must be positive mm, got {list(pixdim)}')
        if min(size) < 1:
            raise ModelError(f'model input "spatial_size" must be positive, got {list(size)}')
        if window[0] >= window[1]:
            raise ModelError(f'model input "window" must be [low, high] HU, got {list(window)}')
        return cls(pixdim=pixdim, spatial_size=size, window=window)

    def as_dict(self) -> dict[str, list[float] | list[int]]:
        return {
            "pixdim": list(self.pixdim),
            "spatial_size": list(self.spatial_size),
            "window": list(self.window),
        }


def _numbers(d: Mapping[str, Any], key: str, count: int, kind: type) -> list[Any]:
    value = d.get(key)
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != count
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise ModelError(
            f'model input "{key}" must be a list of {count} numbers, got {value!r}; '
            "fix the model's triage.json"
        )
    if kind is int and not all(float(v).is_integer() for v in value):
        raise ModelError(f'model input "{key}" must hold whole numbers, got {value!r}')
    return [kind(v) for v in value]


def select_device(name: str) -> torch.device:
    """The torch device for a setting: "auto" (CUDA when present), "cpu", "cuda" or "cuda:N"."""
    text = name.strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ModelError(
                f'device "{name}" was asked for but CUDA is not available on this machine; '
                'set the device to "auto" or "cpu"'
            )
        device = torch.device(text)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ModelError(
                f'device "{name}" does not exist: this machine has '
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
        return device
    raise ModelError(f'unknown device "{name}": use "auto", "cpu", "cuda" or "cuda:N"')


def model_input(
    hu: np.ndarray, affine_lps: np.ndarray, spec: InputSpec, device: torch.device
) -> torch.Tensor:
    """The network input (1, 1, *spatial_size), float32 on ``device``, from a HU volume.

    ``hu`` is indexed [column, row, slice] and ``affine_lps`` maps voxel indices to LPS mm. The
    volume is reoriented to RAS, resampled to ``spec.pixdim`` (bilinear), windowed to [0, 1]
    with clipping and centre-cropped or zero-padded to ``spec.spatial_size``.

    Before the bilinear resampling, voxels are averaged in blocks of whole voxels no larger
    than the target voxel: bilinear interpolation alone samples a fine grid without averaging
    it, which keeps all the noise of thin slices and small pixels and aliases small details.
    """
    return model_input_with_affine(hu, affine_lps, spec, device)[0]


def model_input_with_affine(
    hu: np.ndarray, affine_lps: np.ndarray, spec: InputSpec, device: torch.device
) -> tuple[torch.Tensor, np.ndarray]:
    """`model_input` and the 4x4 affine from the input's voxel indices to LPS mm: where a
    segmentation model's output voxels lie in the patient."""
    hu = np.asarray(hu)
    affine = np.asarray(affine_lps, dtype=np.float64)
    if hu.ndim != 3:
        raise ModelError(f"model input must be a 3D volume, got shape {hu.shape}")
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise ModelError(f"affine_lps must be a finite 4x4 matrix, got shape {affine.shape}")
    affine_ras = LPS_TO_RAS @ affine
    low, high = spec.window
    with torch.no_grad():
        x: Any = _ras_blocks_on_host(hu, affine_ras, spec.pixdim) if device.type == "cpu" else None
        if x is None:
            image = MetaTensor(on_device(hu, device), affine=torch.from_numpy(affine_ras))
            x = _box_downsample(_to_ras(image), spec.pixdim)
        x = Spacing(pixdim=spec.pixdim, mode="bilinear", padding_mode="border")(x)
        x = ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)(x)
        x = ResizeWithPadOrCrop(spatial_size=spec.spatial_size, mode="constant")(x)
    if not isinstance(x, MetaTensor):
        raise ModelError("MONAI preprocessing lost the image geometry")
    out = x.as_tensor().to(device=device, dtype=torch.float32).contiguous()[None]
    ras = x.affine.detach().cpu().numpy().astype(np.float64)
    return out, LPS_TO_RAS @ ras


def on_device(hu: np.ndarray, device: torch.device) -> torch.Tensor:
    """The volume as a (1, X, Y, Z) float32 tensor on ``device``: the one copy from the host.

    Every later step (reorientation, block averaging, resampling, windowing, cropping) runs on
    torch tensors where this one lies. For CUDA a float32 volume goes as it lies in memory (an
    assembled volume is a transposed view of its decoded slices): the device reorders it, not
    the host. The CPU reorders it with numpy first, which is faster there than torch's copy.
    """
    strided = hu.dtype == np.float32 and hu.flags.writeable and all(s > 0 for s in hu.strides)
    if device.type == "cpu" or not strided:
        hu = np.ascontiguousarray(hu, dtype=np.float32)
    return torch.from_numpy(hu)[None].to(device)


def _ras_plan(affine: np.ndarray, shape: Sequence[int]) -> tuple[list[int], list[int], np.ndarray]:
    """How `_to_ras` reorders the voxel axes: for each new (R, A, S) axis the old axis it takes,
    the new axes that are flipped, and the transform from new voxel indices to old ones."""
    directions = affine[:3, :3]
    # For each world axis (R, A, S) the voxel axis most aligned with it, taking the strongest first.
    weight = np.abs(directions / np.linalg.norm(directions, axis=0, keepdims=True))
    order = [-1, -1, -1]
    for _ in range(3):
        world, voxel = np.unravel_index(np.argmax(weight), weight.shape)
        order[int(world)] = int(voxel)
        weight[world, :] = -1.0
        weight[:, voxel] = -1.0
    transform = np.zeros((4, 4))  # new voxel index -> old voxel index
    transform[3, 3] = 1.0
    flips = []
    for new_axis, old_axis in enumerate(order):
        if directions[new_axis, old_axis] < 0:
            flips.append(new_axis)
            transform[old_axis, new_axis] = -1.0
            transform[old_axis, 3] = shape[old_axis] - 1
        else:
            transform[old_axis, new_axis] = 1.0
    return order, flips, transform


def _to_ras(image: MetaTensor) -> MetaTensor:
    """Permute and flip the voxel axes so they run closest to R, A, S (like MONAI Orientation).

    MONAI's Orientation needs nibabel, which this project does not depend on; for the
    near-orthogonal affines of DICOM series this axis matching is the same operation.
    """
    affine = image.affine.detach().cpu().numpy().astype(np.float64)
    order, flips, transform = _ras_plan(affine, image.shape[1:])
    data = image.as_tensor().permute(0, *(a + 1 for a in order))
    if flips:
        data = torch.flip(data, dims=[a + 1 for a in flips])
    new_affine = torch.as_tensor(affine @ transform, dtype=torch.float64)
    return MetaTensor(data.contiguous(), affine=new_affine)


def _block_factors(affine: np.ndarray, shape: Sequence[int], pixdim: Sequence[float]) -> list[int]:
    """f = floor(target / voxel size) per (RAS-ordered) axis, at least 1, at most the axis."""
    voxel = np.linalg.norm(affine[:3, :3], axis=0)
    return [
        int(min(n, max(1, np.floor(target / size + 1e-6))))
        for target, size, n in zip(pixdim, voxel, shape, strict=True)
    ]


def _pool_transform(factors: Sequence[int]) -> np.ndarray:
    transform = np.diag([*factors, 1]).astype(np.float64)  # new voxel index -> old voxel index
    transform[:3, 3] = (np.asarray(factors) - 1) / 2.0
    return transform


def _ras_blocks_on_host(
    hu: np.ndarray, affine_ras: np.ndarray, pixdim: Sequence[float]
) -> MetaTensor | None:
    """`_box_downsample(_to_ras(volume))` on the CPU, without copying the whole volume.

    An assembled volume is a transposed view of its decoded slices; reordering it to RAS first
    is a copy across the slices, a cache miss per voxel (about 1.9 s for 512 x 512 x 200 on a
    2-core machine). Here the blocks are averaged over the volume as it lies in memory, with
    the very blocks `_box_downsample` would average after the reorientation (on a flipped
    axis the partial block is dropped at the other end), and only the small result is
    reordered. The values are the same up to float32 rounding (the sums run in another
    order). None when no axis is averaged: the caller reorients as before.
    """
    order, flips, to_old = _ras_plan(affine_ras, hu.shape)
    affine = affine_ras @ to_old
    factors = _block_factors(affine, [hu.shape[o] for o in order], pixdim)
    if factors == [1, 1, 1]:
        return None
    physical = [int(a) for a in np.argsort(np.abs(hu.strides))[::-1]]  # old axes, outermost first
    lying = np.ascontiguousarray(hu.transpose(physical), dtype=np.float32)  # a view, usually
    kernel, window = [], []
    for old_axis in physical:
        new_axis = order.index(old_axis)
        f, n = factors[new_axis], hu.shape[old_axis]
        kept = n - n % f
        kernel.append(f)
        window.append(slice(n - kept, n) if new_axis in flips else slice(0, kept))
    data = torch.from_numpy(lying)[tuple(window)]
    pooled = torch.nn.functional.avg_pool3d(data[None, None], kernel, stride=kernel)[0, 0]
    ras = pooled.permute(*(physical.index(order[a]) for a in range(3)))
    if flips:
        ras = torch.flip(ras, dims=flips)
    new_affine = torch.as_tensor(affine @ _pool_transform(factors), dtype=torch.float64)
    return MetaTensor(ras.contiguous()[None], affine=new_affine)


def _box_downsample(image: MetaTensor, pixdim: Sequence[float]) -> MetaTensor:
    """Average blocks of f voxels per axis, f = floor(target / voxel size): an anti-alias prefilter.

    Expects RAS-ordered axes (after `_to_ras`), so axis a is compared with ``pixdim[a]``.
    A trailing partial block is dropped (at most f - 1 voxels at one edge).
    """
    affine = image.affine.detach().cpu().numpy().astype(np.float64)
    factors = _block_factors(affine, image.shape[1:], pixdim)
    if factors == [1, 1, 1]:
        return image
    data = torch.nn.functional.avg_pool3d(image.as_tensor()[None], factors, stride=factors)[0]
    return MetaTensor(
        data, affine=torch.as_tensor(affine @ _pool_transform(factors), dtype=torch.float64)
    )
