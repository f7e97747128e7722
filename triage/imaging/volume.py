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

This module holds the `Volume` and the entry points (a series as datasets, store keys or files
-> its volume(s)); the steps are `triage.imaging.planning` (frames -> stacks),
`triage.imaging.geometry` (a stack's grid: spacing, tilt, uneven steps) and
`triage.imaging.pixels` (decoding, rescaling, resampling).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from pydicom.dataset import Dataset

from triage.attributes import readable_text
from triage.errors import NotAVolumeError
from triage.imaging.geometry import DEFAULT_OPTIONS, AssemblyOptions, Geometry, Stack, stack_of
from triage.imaging.pixels import decode_stack, resample
from triage.imaging.planning import collect_frames, plan_stacks
from triage.imaging.reading import read_dicom
from triage.imaging.workers import DecodingAhead

if TYPE_CHECKING:
    from monai.data import MetaTensor

log = logging.getLogger(__name__)

#: a first instance loaded within this time, plus its size at this rate, came from memory or a
#: local disk: the rest are loaded one after the other (see `read_instances`)
LOCAL_LOAD_S = 0.001
LOCAL_LOAD_BYTES_PER_S = 1e9


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
    """The instance in a file's bytes, read as `pydicom.dcmread` reads it (`read_dicom`)."""
    try:
        return read_dicom(data)
    except Exception as exc:
        raise NotAVolumeError(f"{name} cannot be read as DICOM: {exc}") from exc


def _header(ds: Dataset) -> Dataset:
    """A copy without pixel data, kept for the SR's image library."""
    header = Dataset()
    header.file_meta = ds.file_meta
    for tag in ds.keys():  # noqa: SIM118 (iterating a Dataset reads each element, pixels too)
        if tag >> 16 != 0x7FE0:
            header.add(ds[tag])
    return header


# -- pixels ------------------------------------------------------------------------------------


def load_stack(
    stack: Stack,
    series_uid: str,
    options: AssemblyOptions = DEFAULT_OPTIONS,
    ahead: DecodingAhead | None = None,
) -> Volume:
    """Decode and rescale a planned stack (``ahead``: what was handed to the decoding processes
    as the instances were read); a slice that cannot be decoded is left out (and named in the
    warnings) when the others still make a volume."""
    planes, failures = decode_stack(stack, options, ahead)
    if failures:
        stack = _without_undecodable(stack, failures, options)
        planes, more = decode_stack(stack, options, ahead)
        if more:
            raise NotAVolumeError("; ".join(more.values()))
    if stack.resampled:
        planes = resample(stack, planes)
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
        replanned = stack_of(kept, options, stack.warnings, stack.time_point)
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
    ahead: DecodingAhead | None = None,
) -> Volume:
    """The one volume a series makes; a 4D series is refused with its time points named."""
    stacks = plan_series(datasets, options, names)
    if len(stacks) > 1:
        raise NotAVolumeError(
            f"a 4D (time) series: {len(stacks)} time points of {len(stacks[0].frames)} slices, "
            "not one volume"
        )
    series_uid = readable_text(datasets[0], "SeriesInstanceUID")
    return load_stack(stacks[0], series_uid, options, ahead)


def assemble_volume(
    load: Callable[[str], bytes],
    keys: Sequence[str],
    options: AssemblyOptions = DEFAULT_OPTIONS,
) -> Volume:
    """Read the instances named by keys and assemble their one volume; compressed ones are
    handed to the decoding processes as they are read."""
    if not keys:
        raise NotAVolumeError("no images in the series")
    ahead = DecodingAhead(len(keys), options.workers)
    try:
        datasets = read_instances(load, keys, options.workers, ahead)
        return volume_from_datasets(datasets, options, names=list(keys), ahead=ahead)
    except BaseException:
        ahead.cancel()  # what was handed over and not started yet is not decoded for nothing
        raise


def read_instances(
    load: Callable[[str], bytes],
    keys: Sequence[str],
    workers: int,
    ahead: DecodingAhead | None = None,
) -> list[Dataset]:
    """The instances named by keys, in order. Each is parsed in this thread (parsing holds the
    GIL); they are loaded in threads only when loading waits (a network store, a cold disk):
    bytes that come at memory speed (the page cache) come faster one after the other, since
    threads then cost more in GIL hand-offs than they overlap (140 files of 512 kB on 2 cores:
    120 ms serially, 220 ms in 4 threads). Each is handed to ``ahead`` once read."""
    datasets: list[Dataset] = []

    def parse(data: bytes, key: str) -> None:
        ds = read_instance(data, key)
        datasets.append(ds)
        if ahead is not None:
            ahead.add(ds, key)

    start = time.perf_counter()
    data = load(keys[0])
    waited = time.perf_counter() - start
    parse(data, keys[0])
    rest = keys[1:]
    if waited < LOCAL_LOAD_S + len(data) / LOCAL_LOAD_BYTES_PER_S or workers < 2:
        for key in rest:
            parse(load(key), key)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for key, loaded in zip(rest, pool.map(load, rest), strict=True):
                parse(loaded, key)
    if ahead is not None:
        ahead.flush()
    return datasets


def load_files(
    paths: Sequence[str | os.PathLike[str]], options: AssemblyOptions = DEFAULT_OPTIONS
) -> Volume:
    """The one volume of a series given as files (each file read once)."""

    def load(path: str) -> bytes:
        with open(path, "rb") as fh:
            return fh.read()

    return assemble_volume(load, [os.fspath(p) for p in paths], options)
