"""Series -> volume(s): arrays in HU (CT) or stored units (MR) with the affine that places them.

The rules, in order:

* every instance becomes frames (classic images: one; enhanced multi-frame: one per frame, with
  the per-frame functional groups), and the same SOP instance/frame seen twice is dropped;
* all frames must share one orientation, one size and one pixel spacing;
* frames are grouped by position and sorted along the slice normal (never by InstanceNumber);
  a position holding the same pixel data twice keeps one copy; a position repeated with
  different data in every position is a 4D series, split into time points;
* the slice positions must lie on one line; the step between them is measured, not read
  from SliceThickness/SpacingBetweenSlices;
* gantry tilt (the line is not the slice normal) is kept as a shear in the affine: its third
  column is the real step between slice centres, so no voxel is interpolated and every voxel
  is exactly where the scanner put it;
* uneven steps and missing slices are resampled linearly onto a regular grid with the median
  step (or refused, ``uneven_spacing="refuse"``) and reported as warnings.

Pixel data is decoded once per instance, in parallel threads, and rescaled per frame with its
own RescaleSlope/Intercept. A file that cannot be decoded is named; its slice is treated as
missing when the rest still makes a volume.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from triage.attributes import readable_text
from triage.errors import NotAVolumeError
from triage.imaging.decode import (
    check_size,
    decode_portable_batch,
    decoder_pool,
    decoder_pool_failed,
    is_encapsulated,
    portable,
    stored_values,
)
from triage.imaging.frames import Frame, frames_of, is_localizer

if TYPE_CHECKING:
    from monai.data import MetaTensor

log = logging.getLogger(__name__)

MIN_SLICES = 3
ORIENTATION_TOLERANCE = 1e-3  # direction cosines
POSITION_TOLERANCE_MM = 0.01  # two frames closer than this share a position
SPACING_TOLERANCE = 0.1  # relative step difference still "even"
TILT_TOLERANCE_DEGREES = 0.05
UNEVEN_SPACING_CHOICES = ("resample", "refuse")
PROCESS_DECODING_MIN_INSTANCES = 8  # fewer compressed images are decoded in threads
PROCESS_BATCH = 8  # compressed images per task sent to a decoding process, at most


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


@dataclass
class Volume:
    """A float32 array indexed [column, row, slice] and its voxel -> LPS mm affine."""

    array: np.ndarray
    affine_lps: np.ndarray
    series_instance_uid: str
    sources: list[Dataset] = field(repr=False)  # the instances it was made of
    warnings: list[str] = field(default_factory=list)
    time_point: int | None = None

    @property
    def headers(self) -> list[Dataset]:
        """Copies of the source instances without pixel data (e.g. for an SR's image library)."""
        return [_header(ds) for ds in self.sources]

    @property
    def geometry(self) -> Geometry:
        shape = self.array.shape
        return Geometry((shape[0], shape[1], shape[2]), self.affine_lps)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.geometry.spacing

    def metatensor(self) -> MetaTensor:
        """The volume as a channel-first MONAI MetaTensor with its affine in RAS (MONAI's)."""
        import torch
        from monai.data import MetaTensor

        lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
        data = torch.from_numpy(np.ascontiguousarray(self.array))[None]
        return MetaTensor(data, affine=torch.from_numpy(lps_to_ras @ self.affine_lps))


# -- reading -----------------------------------------------------------------------------------


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


# -- planning ----------------------------------------------------------------------------------


def collect_frames(
    datasets: Sequence[Dataset], names: Sequence[str] | None = None
) -> tuple[list[Frame], list[str]]:
    """Every frame of every instance, and warnings. Localizers in the series are left out (a
    scout sent with the slices); any other instance that is not a slice stops it."""
    names = names or [
        readable_text(ds, "SOPInstanceUID") or f"image {i + 1}" for i, ds in enumerate(datasets)
    ]
    frames: list[Frame] = []
    localizers = 0
    for ds, name in zip(datasets, names, strict=True):
        try:
            if is_localizer(ds):
                localizers += 1
                continue
            frames.extend(frames_of(ds, name))
        except NotAVolumeError:
            raise
        except Exception as exc:  # a corrupt element: pydicom raises many types
            raise NotAVolumeError(f"{name}: the header cannot be read ({exc})") from exc
    if localizers and not frames:
        raise NotAVolumeError(f"localizer (scout) image(s) only ({localizers})")
    warnings = [f"left out {localizers} localizer (scout) image(s)"] if localizers else []
    return frames, warnings


def plan_stacks(
    frames: Sequence[Frame],
    options: AssemblyOptions = DEFAULT_OPTIONS,
    warnings: Sequence[str] = (),
) -> list[Stack]:
    """The volume(s) these frames make: one, or one per time point of a 4D series.

    Raises NotAVolumeError with the reason when they make none.
    """
    if not frames:
        raise NotAVolumeError("no images in the series")
    warnings = list(warnings)
    unique = _without_repeated_instances(frames, warnings)
    _check_same_plane(unique)
    positions = _group_by_position(unique, warnings)
    if len(positions) < MIN_SLICES:
        images = sum(len(group) for group in positions)
        what = (
            "a single image" if images == 1 else f"{images} images at {len(positions)} position(s)"
        )
        raise NotAVolumeError(f"{what}: at least {MIN_SLICES} slice positions make a volume")
    counts = {len(group) for group in positions}
    if counts == {1}:
        return [_stack([group[0] for group in positions], options, warnings, None)]
    if len(counts) == 1:
        repeats = counts.pop()
        for group in positions:
            keys = [f.time_key for f in group]
            if len(set(keys)) != len(keys):
                raise NotAVolumeError(
                    f"{len(positions)} slice positions each hold {repeats} different images "
                    "that nothing (time, acquisition or instance number) tells apart"
                )
        ordered = [sorted(group, key=lambda f: f.time_key) for group in positions]
        return [
            _stack([group[t] for group in ordered], options, warnings, t) for t in range(repeats)
        ]
    busy = sum(1 for group in positions if len(group) > 1)
    raise NotAVolumeError(
        f"duplicate positions: {busy} of {len(positions)} slice positions hold more than one "
        "different image (a mixed or repeated acquisition)"
    )


def _without_repeated_instances(frames: Sequence[Frame], warnings: list[str]) -> list[Frame]:
    seen: set[tuple[str, int | None]] = set()
    unique = []
    for frame in frames:
        if frame.identity in seen:
            continue
        seen.add(frame.identity)
        unique.append(frame)
    if len(unique) < len(frames):
        warnings.append(f"dropped {len(frames) - len(unique)} copy(ies) of the same instance")
    return unique


def _check_same_plane(frames: Sequence[Frame]) -> None:
    first = frames[0]
    if any(
        not np.allclose(f.orientation, first.orientation, atol=ORIENTATION_TOLERANCE)
        for f in frames
    ):
        planes = {
            tuple(np.round(np.asarray(f.orientation) / ORIENTATION_TOLERANCE)) for f in frames
        }
        raise NotAVolumeError(
            f"mixed orientations: the images lie in {len(planes)} different planes"
        )
    sizes = {(f.rows, f.columns) for f in frames}
    if len(sizes) > 1:
        listed = ", ".join(f"{r}x{c}" for r, c in sorted(sizes))
        raise NotAVolumeError(f"images have different sizes ({listed})")
    if any(not np.allclose(f.pixel_spacing, first.pixel_spacing, rtol=1e-3) for f in frames):
        raise NotAVolumeError("images have different pixel spacings")


def _group_by_position(frames: Sequence[Frame], warnings: list[str]) -> list[list[Frame]]:
    """Frames grouped by ImagePositionPatient, groups in order along the slice normal."""
    normal = np.cross(frames[0].row_direction, frames[0].column_direction)
    points = np.array([f.position for f in frames])
    along = points @ normal
    groups: list[list[Frame]] = []
    anchors: list[np.ndarray] = []
    for index in np.argsort(along, kind="stable"):
        frame = frames[int(index)]
        if anchors and np.linalg.norm(points[index] - anchors[-1]) < POSITION_TOLERANCE_MM:
            groups[-1].append(frame)
        else:
            groups.append([frame])
            anchors.append(points[index])
    dropped = 0
    for g, group in enumerate(groups):
        kept: list[Frame] = []
        for frame in group:
            if any(_same_pixels(frame, other) for other in kept):
                dropped += 1
            else:
                kept.append(frame)
        groups[g] = kept
    if dropped:
        warnings.append(f"dropped {dropped} duplicate slice(s): same position, same pixels")
    return groups


def _same_pixels(a: Frame, b: Frame) -> bool:
    if a.number is not None or b.number is not None:
        return False
    if (a.slope, a.intercept) != (b.slope, b.intercept):
        return False
    return bool(a.dataset.get("PixelData") == b.dataset.get("PixelData"))


def _stack(
    frames: list[Frame], options: AssemblyOptions, inherited: list[str], time_point: int | None
) -> Stack:
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


# -- pixels ------------------------------------------------------------------------------------


def decode_stack(
    stack: Stack, options: AssemblyOptions = DEFAULT_OPTIONS
) -> tuple[np.ndarray, dict[str, str]]:
    """The stack's voxels as float32 (slices, rows, columns), or the sources that failed
    to decode with the reason (then the array is not to be used).

    One task per instance: decode it, then rescale each of its frames into its slot.
    """
    first = stack.frames[0]
    check_size(first.rows, first.columns, len(stack.frames), first.source)
    slots: dict[str, list[tuple[int, Frame]]] = {}
    for k, frame in enumerate(stack.frames):
        slots.setdefault(frame.source, []).append((k, frame))
    out = np.empty((len(stack.frames), first.rows, first.columns), dtype=np.float32)
    in_processes = _decode_in_processes(slots, options)

    def decode(source: str) -> str | None:
        try:
            if source in in_processes:
                try:
                    values = in_processes[source].result()
                except BrokenProcessPool:  # a worker died: decode here instead
                    decoder_pool_failed()
                    values = stored_values(slots[source][0][1].dataset, source)
            else:
                values = stored_values(slots[source][0][1].dataset, source)
        except NotAVolumeError as exc:
            return str(exc)
        except Exception as exc:  # a broken element can raise anything from pydicom
            return f"{source}: pixel data cannot be decoded: {exc}"
        for k, frame in slots[source]:
            np.multiply(
                values[frame.number or 0], np.float32(frame.slope), out=out[k], casting="unsafe"
            )
            if frame.intercept:
                out[k] += np.float32(frame.intercept)
        return None

    with ThreadPoolExecutor(max_workers=options.workers) as pool:
        results = list(pool.map(decode, slots))
    failures = {source: msg for source, msg in zip(slots, results, strict=True) if msg}
    return out, failures


class _InBatch:
    """One instance's share of a batch decoded in a worker process."""

    def __init__(self, batch: Future[list[np.ndarray | NotAVolumeError]], index: int) -> None:
        self.batch, self.index = batch, index

    def result(self) -> np.ndarray:
        value = self.batch.result()[self.index]
        if isinstance(value, NotAVolumeError):
            raise value
        return value


def _decode_in_processes(
    slots: dict[str, list[tuple[int, Frame]]], options: AssemblyOptions
) -> dict[str, _InBatch]:
    """Start decoding the compressed instances in worker processes (their decoders hold the
    GIL), in batches of a few instances; none when there are too few to be worth it or only
    one CPU."""
    compressed = [s for s, frames in slots.items() if is_encapsulated(frames[0][1].dataset)]
    if len(compressed) < PROCESS_DECODING_MIN_INSTANCES:
        return {}
    pool = decoder_pool(options.workers)
    if pool is None:
        return {}
    items = []
    for source in compressed:
        try:
            attributes, data = portable(slots[source][0][1].dataset)
        except Exception:  # unreadable here too: the thread path reports it with its reason
            continue
        items.append((attributes, data, source))
    size = min(PROCESS_BATCH, max(1, len(items) // (4 * max(1, options.workers))))
    pending: dict[str, _InBatch] = {}
    for start in range(0, len(items), size):
        batch = items[start : start + size]
        future = pool.submit(decode_portable_batch, batch)
        for index, (_, _, source) in enumerate(batch):
            pending[source] = _InBatch(future, index)
    return pending


def _resample(stack: Stack, planes: np.ndarray) -> np.ndarray:
    """Linear interpolation along the stack line onto the regular grid of ``stack.geometry``."""
    count, step = stack.geometry.shape[2], stack.geometry.spacing[2]
    targets = np.arange(count) * step
    below = np.clip(np.searchsorted(stack.offsets, targets, side="right") - 1, 0, len(planes) - 2)
    gap = stack.offsets[below + 1] - stack.offsets[below]
    weight = np.clip((targets - stack.offsets[below]) / gap, 0.0, 1.0).astype(np.float32)
    out = np.empty((count, *planes.shape[1:]), dtype=np.float32)
    for j in range(count):
        np.multiply(planes[below[j]], 1 - weight[j], out=out[j])
        out[j] += weight[j] * planes[below[j] + 1]
    return out


def load_stack(stack: Stack, series_uid: str, options: AssemblyOptions = DEFAULT_OPTIONS) -> Volume:
    """Decode and rescale a planned stack; a slice that cannot be decoded is left out (and
    named in the warnings) when the others still make a volume."""
    planes, failures = decode_stack(stack, options)
    if failures:
        stack = _without_undecodable(stack, failures, options)
        planes, more = decode_stack(stack, options)
        if more:
            raise NotAVolumeError("; ".join(more.values()))
    if stack.resampled:
        planes = _resample(stack, planes)
    headers = {id(f.dataset): f.dataset for f in stack.frames}
    return Volume(
        array=planes.transpose(2, 1, 0),  # a view: [column, row, slice]
        affine_lps=stack.geometry.affine_lps,
        series_instance_uid=series_uid,
        sources=list(headers.values()),
        warnings=stack.warnings,
        time_point=stack.time_point,
    )


def _without_undecodable(stack: Stack, failures: dict[str, str], options: AssemblyOptions) -> Stack:
    kept = [f for f in stack.frames if f.source not in failures]
    named = "; ".join(list(failures.values())[:3]) + (" ..." if len(failures) > 3 else "")
    try:
        if not kept:
            raise NotAVolumeError("no slice left")
        replanned = _stack(kept, options, stack.warnings, stack.time_point)
    except NotAVolumeError as exc:
        raise NotAVolumeError(f"{named} (without it: {exc})") from exc
    replanned.warnings.extend(f"left out, cannot be decoded: {m}" for m in failures.values())
    return replanned


# -- the public entry points -------------------------------------------------------------------


def plan_series(
    datasets: Sequence[Dataset],
    options: AssemblyOptions = DEFAULT_OPTIONS,
    names: Sequence[str] | None = None,
) -> list[Stack]:
    """The volume(s) a series makes, planned from headers only (nothing decoded)."""
    if not datasets:
        raise NotAVolumeError("no images in the series")
    frames, warnings = collect_frames(datasets, names)
    return plan_stacks(frames, options, warnings)


def volumes_from_datasets(
    datasets: Sequence[Dataset],
    options: AssemblyOptions = DEFAULT_OPTIONS,
    names: Sequence[str] | None = None,
) -> list[Volume]:
    """Every volume a series makes (one per time point of a 4D series)."""
    stacks = plan_series(datasets, options, names)
    series_uid = readable_text(datasets[0], "SeriesInstanceUID")
    return [load_stack(stack, series_uid, options) for stack in stacks]


def volume_from_datasets(
    datasets: Sequence[Dataset],
    options: AssemblyOptions = DEFAULT_OPTIONS,
    names: Sequence[str] | None = None,
) -> Volume:
    """The one volume a series makes; a 4D series is refused with its time points named."""
    stacks = plan_series(datasets, options, names)
    if len(stacks) > 1:
        raise NotAVolumeError(
            f"a 4D (time) series: {len(stacks)} time points of {len(stacks[0].frames)} slices, "
            "not one volume"
        )
    series_uid = readable_text(datasets[0], "SeriesInstanceUID")
    return load_stack(stacks[0], series_uid, options)


def assemble_volume(
    load: Callable[[str], bytes],
    keys: Sequence[str],
    options: AssemblyOptions = DEFAULT_OPTIONS,
) -> Volume:
    """Read the instances named by keys (in parallel) and assemble their one volume."""
    if not keys:
        raise NotAVolumeError("no images in the series")

    def read(key: str) -> Dataset:
        return read_instance(load(key), key)

    with ThreadPoolExecutor(max_workers=options.workers) as pool:
        datasets = list(pool.map(read, keys))
    return volume_from_datasets(datasets, options, names=list(keys))


def load_files(
    paths: Sequence[str | os.PathLike[str]], options: AssemblyOptions = DEFAULT_OPTIONS
) -> Volume:
    """The one volume of a series given as files (each file read once, in parallel threads)."""

    def load(path: str) -> bytes:
        with open(path, "rb") as fh:
            return fh.read()

    return assemble_volume(load, [os.fspath(p) for p in paths], options)
