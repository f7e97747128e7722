"""Where a finding lies on the source series' own slices: what a viewer shows with the images.

A model sees a resampled grid (`triage.analysis.preprocess`); a radiologist sees the scanner's
slices. These functions go back from one to the other with each slice's own geometry
(ImagePositionPatient, ImageOrientationPatient, PixelSpacing, Rows, Columns), never with a
volume's regular grid, so gantry tilt and uneven or overlapping slices land where the scanner
put them: the lesion mask on each source slice (for a DICOM Segmentation) and the slices
nearest a point (the key images of a Key Object Selection).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from triage.errors import TriageError


@dataclass(frozen=True)
class SliceGeometry:
    """Where one single-frame image lies in the patient (LPS mm)."""

    position: np.ndarray  # ImagePositionPatient: centre of the first pixel
    row_direction: np.ndarray  # along a row: the column index grows
    column_direction: np.ndarray  # down a column: the row index grows
    pixel_spacing: tuple[float, float]  # DICOM order: between rows, between columns
    rows: int
    columns: int

    @property
    def normal(self) -> np.ndarray:
        """The unit normal of the image plane (row direction x column direction)."""
        n = np.cross(self.row_direction, self.column_direction)
        return n / np.linalg.norm(n)

    def distance_to(self, point_lps: np.ndarray) -> float:
        """How far a point is from the image plane, along its normal (mm)."""
        return abs(float(self.normal @ (np.asarray(point_lps) - self.position)))


def slice_geometry(image: Dataset, argument: str = "source_images") -> SliceGeometry:
    """The geometry of one single-frame image header; a TriageError names what is unusable."""
    if not isinstance(image, Dataset):
        raise TriageError(f'Argument "{argument}" must hold pydicom Datasets, got {type(image)}.')
    try:
        frames = int(image.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        frames = 0
    if frames != 1:
        raise TriageError(
            f'Argument "{argument}" is not a single-frame image (NumberOfFrames '
            f"{image.get('NumberOfFrames')!r}); only images of one slice per instance are "
            "supported."
        )
    position = _numbers(image, "ImagePositionPatient", 3, argument)
    orientation = _numbers(image, "ImageOrientationPatient", 6, argument)
    spacing = _numbers(image, "PixelSpacing", 2, argument)
    row, column = orientation[:3], orientation[3:]
    if (
        abs(np.linalg.norm(row) - 1) > 0.01
        or abs(np.linalg.norm(column) - 1) > 0.01
        or abs(float(row @ column)) > 0.01
    ):
        raise TriageError(
            f'Argument "{argument}" has an ImageOrientationPatient that is not two unit, '
            "orthogonal directions."
        )
    if min(spacing) <= 0:
        raise TriageError(f'Argument "{argument}" has a PixelSpacing that is not positive.')
    try:
        rows, columns = int(image.Rows), int(image.Columns)
    except (AttributeError, TypeError, ValueError):
        raise TriageError(f'Argument "{argument}" has no usable Rows and Columns.') from None
    if rows < 1 or columns < 1:
        raise TriageError(f'Argument "{argument}" has an empty image ({rows} x {columns}).')
    return SliceGeometry(
        position=position,
        row_direction=row / np.linalg.norm(row),
        column_direction=column / np.linalg.norm(column),
        pixel_spacing=(float(spacing[0]), float(spacing[1])),
        rows=rows,
        columns=columns,
    )


def mask_on_source_slices(
    mask: np.ndarray, mask_affine_lps: np.ndarray, source_images: Sequence[Dataset]
) -> np.ndarray:
    """The mask resampled (nearest neighbour) onto each source image's pixels.

    ``mask`` is a 3D array (any voxel order) whose voxel indices ``mask_affine_lps`` maps to
    LPS mm, e.g. `Score.lesion_mask` and `Score.mask_affine_lps`. Returns a bool array
    (frames, rows, columns) in the order of ``source_images``: frame ``f`` is the mask at the
    centre of every pixel of ``source_images[f]``, False outside the mask's grid. Frame ``f``
    therefore lies exactly on that image, whatever the tilt or spacing of the series.
    """
    volume = _mask_array(mask)
    inverse = _inverse_affine(mask_affine_lps)
    geometries = _geometries(source_images)
    shape = np.asarray(volume.shape)
    frames = []
    for g in geometries:
        # voxel index of pixel (r, c) = base + r * down + c * across, in mask voxel units
        base = inverse[:3, :3] @ g.position + inverse[:3, 3]
        down = inverse[:3, :3] @ (g.column_direction * g.pixel_spacing[0])
        across = inverse[:3, :3] @ (g.row_direction * g.pixel_spacing[1])
        r = np.arange(g.rows, dtype=np.float64)[:, None, None]
        c = np.arange(g.columns, dtype=np.float64)[None, :, None]
        index = np.rint(base + r * down + c * across).astype(np.int64)  # (rows, columns, 3)
        inside = np.all((index >= 0) & (index < shape), axis=-1)
        frame = np.zeros((g.rows, g.columns), dtype=bool)
        hit = index[inside]
        frame[inside] = volume[hit[:, 0], hit[:, 1], hit[:, 2]]
        frames.append(frame)
    if len({f.shape for f in frames}) != 1:
        raise TriageError(
            'Argument "source_images" mixes image sizes (Rows x Columns); the frames of one '
            "segmentation must all have the same size."
        )
    return np.stack(frames)


def key_images(
    source_images: Sequence[Dataset], point_lps: Sequence[float], count: int = 1
) -> list[Dataset]:
    """The ``count`` source images nearest to a point along their slice normal, nearest first.

    The distance is from the point to each image's plane, so a tilted series gives the slices
    that really pass through the point. Equally near images keep their order in
    ``source_images``. The images themselves are returned (the objects given).
    """
    point = np.asarray(point_lps, dtype=np.float64)
    if point.shape != (3,) or not np.all(np.isfinite(point)):
        raise TriageError(
            f'Argument "point_lps" must be three finite numbers (LPS mm), got {point_lps!r}.'
        )
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise TriageError(f'Argument "count" must be a positive whole number, got {count!r}.')
    geometries = _geometries(source_images)
    distances = [g.distance_to(point) for g in geometries]
    order = sorted(range(len(distances)), key=lambda i: (distances[i], i))
    return [source_images[i] for i in order[:count]]


def _geometries(source_images: Sequence[Dataset]) -> list[SliceGeometry]:
    if isinstance(source_images, Dataset) or not isinstance(source_images, Sequence):
        raise TriageError(
            'Argument "source_images" must be a sequence of image headers (pydicom Datasets).'
        )
    if not source_images:
        raise TriageError('Argument "source_images" must hold at least one image header.')
    return [slice_geometry(image, f"source_images[{i}]") for i, image in enumerate(source_images)]


def _mask_array(mask: np.ndarray) -> np.ndarray:
    volume = np.asarray(mask)
    if volume.ndim != 3 or min(volume.shape, default=0) < 1:
        raise TriageError(
            f'Argument "mask" must be a non-empty 3D array, got shape {volume.shape}.'
        )
    if volume.dtype != np.bool_:
        if not np.isin(volume, (0, 1)).all():
            raise TriageError('Argument "mask" must be binary (bool, or only 0 and 1).')
        volume = volume.astype(bool)
    return volume


def _inverse_affine(affine_lps: np.ndarray) -> np.ndarray:
    affine = np.asarray(affine_lps, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise TriageError(
            f'Argument "mask_affine_lps" must be a finite 4x4 matrix, got shape {affine.shape}.'
        )
    if abs(float(np.linalg.det(affine[:3, :3]))) < 1e-9:
        raise TriageError('Argument "mask_affine_lps" is singular: its voxels have no size.')
    return np.linalg.inv(affine)


def _numbers(image: Dataset, keyword: str, count: int, argument: str) -> np.ndarray:
    value = image.get(keyword)
    try:
        numbers = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        numbers = np.asarray([])
    if numbers.shape != (count,) or not np.all(np.isfinite(numbers)):
        raise TriageError(
            f'Argument "{argument}" has no usable {keyword} ({count} numbers); the place of its '
            "pixels in the patient is unknown."
        )
    return numbers
