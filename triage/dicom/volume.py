"""Series -> volume: one 3D array in HU with the affine that places it in the patient.

Slices are sorted along the slice normal (not by InstanceNumber), exact duplicates are dropped,
each slice is rescaled to HU with its own slope/intercept. The affine's third column is the real
step between slice positions, so a gantry tilt shows as a shear and stays geometrically right.
Spacing that is not even is refused with a reason rather than silently squashed.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from triage.errors import NotAVolumeError

log = logging.getLogger(__name__)

MIN_SLICES = 3
ORIENTATION_TOLERANCE = 1e-3
SPACING_TOLERANCE = 0.1  # relative step difference accepted as "even"


@dataclass
class Volume:
    """A float32 array indexed [column, row, slice] in HU and its voxel -> LPS mm affine."""

    array: np.ndarray
    affine_lps: np.ndarray
    series_instance_uid: str
    headers: list[Dataset]
    warnings: list[str] = field(default_factory=list)

    @property
    def spacing(self) -> tuple[float, float, float]:
        x, y, z = (float(np.linalg.norm(self.affine_lps[:3, i])) for i in range(3))
        return (x, y, z)


def read_instance(data: bytes, name: str) -> Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:
        raise NotAVolumeError(f"{name} cannot be read as DICOM: {exc}") from exc


def _header(ds: Dataset) -> Dataset:
    """A copy without pixel data, kept for the SR's image library."""
    header = Dataset()
    header.file_meta = ds.file_meta
    for elem in ds:
        if elem.tag.group != 0x7FE0:
            header.add(elem)
    return header


def assemble_volume(
    load: Callable[[str], bytes], keys: Sequence[str], max_workers: int = 4
) -> Volume:
    """Read the instances named by keys and assemble them; NotAVolumeError says why not."""
    if len(keys) < MIN_SLICES:
        raise NotAVolumeError(f"only {len(keys)} image(s): at least {MIN_SLICES} slices needed")

    def read(key: str) -> Dataset:
        return read_instance(load(key), key)

    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        datasets = list(pool.map(read, keys))
    return volume_from_datasets(datasets, max_workers=max_workers)


def volume_from_datasets(datasets: Sequence[Dataset], max_workers: int = 4) -> Volume:
    if not datasets:
        raise NotAVolumeError("no images in the series")
    series_uid = str(datasets[0].get("SeriesInstanceUID", ""))
    for ds in datasets:
        if "NumberOfFrames" in ds and int(ds.NumberOfFrames or 1) > 1:
            raise NotAVolumeError("multi-frame (enhanced) images are not assembled yet")
        for keyword in (
            "ImagePositionPatient",
            "ImageOrientationPatient",
            "PixelSpacing",
            "Rows",
            "Columns",
        ):
            if keyword not in ds:
                raise NotAVolumeError(f"an image lacks {keyword}: it is not a slice of a volume")
    iop = np.array([float(v) for v in datasets[0].ImageOrientationPatient])
    for ds in datasets:
        if not np.allclose(
            [float(v) for v in ds.ImageOrientationPatient], iop, atol=ORIENTATION_TOLERANCE
        ):
            raise NotAVolumeError("images have different orientations (mixed planes)")
    shape = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
    if len(shape) > 1:
        raise NotAVolumeError(f"images have different sizes: {sorted(shape)}")
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    warnings: list[str] = []
    kept: list[int] = []
    for idx in order:
        if kept and abs(along[idx] - along[kept[-1]]) < 1e-3:
            previous = datasets[kept[-1]]
            if datasets[idx].get("PixelData") != previous.get("PixelData"):
                raise NotAVolumeError(
                    "two different images share one slice position (a 4D or mixed series)"
                )
            warnings.append("dropped a duplicate slice at the same position")
            continue
        kept.append(int(idx))
    if len(kept) < MIN_SLICES:
        raise NotAVolumeError(f"only {len(kept)} distinct slice position(s)")
    steps = np.diff(along[kept])
    median = float(np.median(steps))
    if np.max(np.abs(steps - median)) > SPACING_TOLERANCE * median:
        raise NotAVolumeError(
            f"uneven slice spacing ({steps.min():.2f}-{steps.max():.2f} mm) is not resampled yet"
        )
    ordered = [datasets[i] for i in kept]

    def hu(ds: Dataset) -> np.ndarray:
        try:
            pixels = ds.pixel_array
        except Exception as exc:
            name = str(ds.get("SOPInstanceUID", "?"))
            raise NotAVolumeError(
                f"pixel data of instance {name} cannot be decoded: {exc}"
            ) from exc
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        return (pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)).T

    rows, cols = shape.pop()
    array = np.empty((cols, rows, len(ordered)), dtype=np.float32)
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        for k, plane in enumerate(pool.map(hu, ordered)):
            if plane.shape != (cols, rows):
                raise NotAVolumeError("pixel data shape differs from Rows x Columns")
            array[:, :, k] = plane
    row_spacing, col_spacing = (float(v) for v in ordered[0].PixelSpacing)
    affine = np.eye(4)
    affine[:3, 0] = row_dir * col_spacing
    affine[:3, 1] = col_dir * row_spacing
    affine[:3, 2] = (positions[kept[-1]] - positions[kept[0]]) / (len(kept) - 1)
    affine[:3, 3] = positions[kept[0]]
    tilt = np.degrees(
        np.arccos(np.clip(abs(affine[:3, 2] @ normal) / np.linalg.norm(affine[:3, 2]), -1, 1))
    )
    if tilt > 0.5:
        warnings.append(f"gantry tilt of {tilt:.1f} degrees kept as a shear in the affine")
    return Volume(array, affine, series_uid, [_header(ds) for ds in ordered], warnings)
