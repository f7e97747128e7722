"""The geometry of a planned volume: its voxel grid, its frames in order, and their spacing.

A `Stack` is one volume planned from headers only: its frames in slice order, their offsets
along the stack line, and the `Geometry` (shape and voxel -> LPS mm affine) they fill.
`stack_of` measures the step between the slices along their line (never read from
SliceThickness or SpacingBetweenSlices), keeps gantry tilt as a shear in the affine, and names
uneven steps and missing slices: resampled onto a regular grid with the median step, or refused
(`AssemblyOptions.uneven_spacing`). How frames become stacks is in `triage.imaging.planning`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from triage.errors import NotAVolumeError
from triage.imaging.frames import Frame

MIN_SLICES = 3
SPACING_TOLERANCE = 0.1  # relative step difference still "even"
TILT_TOLERANCE_DEGREES = 0.05
UNEVEN_SPACING_CHOICES = ("resample", "refuse")


@dataclass(frozen=True)
class AssemblyOptions:
    """How far assembly goes to make a volume of an imperfect series."""

    uneven_spacing: str = "resample"  # or "refuse": uneven steps and gaps are not analysed
    max_gap_steps: float = 4.0  # a step this many times the median is too much to interpolate
    workers: int = 4

    def __post_init__(self) -> None:
        if self.uneven_spacing not in UNEVEN_SPACING_CHOICES:
            raise ValueError(f"uneven_spacing must be one of {UNEVEN_SPACING_CHOICES}")


DEFAULT_OPTIONS = AssemblyOptions()


@dataclass(frozen=True)
class Geometry:
    """Where a voxel grid lies: shape [columns, rows, slices] and voxel -> LPS mm affine."""

    shape: tuple[int, int, int]
    affine_lps: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        x, y, z = (float(np.linalg.norm(self.affine_lps[:3, i])) for i in range(3))
        return (x, y, z)

    @property
    def origin(self) -> tuple[float, float, float]:
        x, y, z = (float(v) for v in self.affine_lps[:3, 3])
        return (x, y, z)

    @property
    def direction(self) -> np.ndarray:
        """3x3 direction cosines; columns are the row, column and slice axes (LPS)."""
        return self.affine_lps[:3, :3] / np.asarray(self.spacing)

    def as_dict(self) -> dict[str, object]:
        return {
            "shape": list(self.shape),
            "spacing": [round(v, 6) for v in self.spacing],
            "origin": [round(v, 6) for v in self.origin],
            "direction": np.round(self.direction, 8).tolist(),
            "affine": np.round(self.affine_lps, 6).tolist(),
        }


@dataclass
class Stack:
    """A planned volume: its frames in slice order and how they map onto the voxel grid."""

    frames: list[Frame]
    offsets: np.ndarray  # each frame's distance from the first along the stack line, mm
    geometry: Geometry
    warnings: list[str]
    time_point: int | None = None

    @property
    def resampled(self) -> bool:
        return self.geometry.shape[2] != len(self.frames) or not np.allclose(
            self.offsets, np.arange(len(self.frames)) * self.geometry.spacing[2], atol=1e-3
        )


def stack_of(
    frames: list[Frame], options: AssemblyOptions, inherited: list[str], time_point: int | None
) -> Stack:
    """The stack these frames make (one per slice position, in order along the normal), with
    the warnings inherited and its own; NotAVolumeError when they make none."""
    count = len(frames)
    if count < MIN_SLICES:
        what = "a single image" if count == 1 else f"only {count} slice positions"
        raise NotAVolumeError(f"{what}: at least {MIN_SLICES} slices are needed for a volume")
    warnings = list(inherited)
    first = frames[0]
    points = np.array([f.position for f in frames])
    line = points[-1] - points[0]
    length = float(np.linalg.norm(line))
    axis = line / length
    normal = np.cross(first.row_direction, first.column_direction)
    offsets = (points - points[0]) @ axis
    off_line = float(np.max(np.linalg.norm(points - points[0] - np.outer(offsets, axis), axis=1)))
    steps = np.diff(offsets)
    median = float(np.median(steps))
    if off_line > max(0.05, 0.02 * median):
        raise NotAVolumeError(
            f"slice positions are not on one line (up to {off_line:.2f} mm off): "
            "the slices are shifted in their plane"
        )
    tilt = float(np.degrees(np.arccos(np.clip(abs(axis @ normal), -1.0, 1.0))))
    if tilt > 45:
        raise NotAVolumeError("the slices are stacked along their own plane, not across it")
    count_out, step = count, length / (count - 1)
    if np.max(np.abs(steps - median)) > SPACING_TOLERANCE * median:
        count_out, step = _regular_grid(steps, length, median, options, warnings)
    if tilt > TILT_TOLERANCE_DEGREES:
        warnings.append(
            f"gantry tilt of {tilt:.1f} degrees: corrected by a shear in the affine "
            "(the slice axis follows the table), voxels are not resampled for it"
        )
    dy, dx = first.pixel_spacing
    affine = np.eye(4)
    affine[:3, 0] = first.row_direction * dx
    affine[:3, 1] = first.column_direction * dy
    affine[:3, 2] = axis * step
    affine[:3, 3] = points[0]
    geometry = Geometry((first.columns, first.rows, count_out), affine)
    return Stack(list(frames), offsets, geometry, warnings, time_point)


def _regular_grid(
    steps: np.ndarray,
    length: float,
    median: float,
    options: AssemblyOptions,
    warnings: list[str],
) -> tuple[int, float]:
    """Name what is irregular, then the regular grid (count, step) it is resampled onto."""
    regular = np.abs(steps - median) <= SPACING_TOLERANCE * median
    gaps = steps > 1.5 * median
    if np.all(regular | gaps):
        problems = [
            f"missing slice(s): a gap of {steps[k]:.2f} mm after slice {k + 1} "
            f"(about {max(1, round(steps[k] / median) - 1)} slice(s) of {median:.2f} mm)"
            for k in np.flatnonzero(gaps)
        ]
    else:
        problems = [f"uneven slice spacing ({steps.min():.2f}-{steps.max():.2f} mm)"]
    largest = float(steps.max())
    if largest > options.max_gap_steps * median:
        raise NotAVolumeError(
            f"{problems[0]}; a step of {largest:.2f} mm is more than {options.max_gap_steps:g} "
            "slice steps: too much is missing to interpolate"
        )
    if options.uneven_spacing == "refuse":
        raise NotAVolumeError(
            f"{'; '.join(problems)}: not resampled (TRIAGE_UNEVEN_SPACING=refuse)"
        )
    count = int(round(length / median)) + 1
    step = length / (count - 1)
    warnings.extend(problems)
    warnings.append(f"resampled linearly onto {count} slices {step:.2f} mm apart")
    return count, step
