"""The pixels of a planned volume: decoded once per instance, rescaled, resampled if uneven.

Each instance is decoded once, in parallel threads, and each of its frames rescaled with its own
RescaleSlope/Intercept into its slot; compressed instances, whose decoders hold the GIL, are
decoded in worker processes when there are enough of them (`triage.imaging.workers`), from the
moment they are read when the series is read from files or a store. A stack
whose steps were uneven is then resampled linearly along its line onto its regular grid.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from triage.errors import NotAVolumeError
from triage.imaging.decode import check_size, rescale, stored_values
from triage.imaging.frames import Frame
from triage.imaging.geometry import DEFAULT_OPTIONS, AssemblyOptions, Stack
from triage.imaging.workers import DecodingAhead, decoder_pool_failed


def decode_stack(
    stack: Stack, options: AssemblyOptions = DEFAULT_OPTIONS, ahead: DecodingAhead | None = None
) -> tuple[np.ndarray, dict[str, str]]:
    """The stack's voxels as float32 (slices, rows, columns), or the sources that failed
    to decode with the reason (then the array is not to be used).

    One task per instance: decode it (or take what a worker process decoded, handed over as
    it was read: ``ahead``), then rescale each of its frames into its slot.
    """
    first = stack.frames[0]
    check_size(first.rows, first.columns, len(stack.frames), first.source)
    slots: dict[str, list[tuple[int, Frame]]] = {}
    for k, frame in enumerate(stack.frames):
        slots.setdefault(frame.source, []).append((k, frame))
    if ahead is None:
        ahead = DecodingAhead(len(slots), options.workers)
        for source, frames in slots.items():
            ahead.add(frames[0][1].dataset, source)
    ahead.flush()
    out = np.empty((len(stack.frames), first.rows, first.columns), dtype=np.float32)

    def decode(source: str) -> str | None:
        try:
            values = None
            job = ahead.pending(source)
            if job is not None:
                try:
                    values = job.result()
                except BrokenProcessPool:  # a worker died: decode here instead
                    decoder_pool_failed()
            if values is None:
                values = stored_values(slots[source][0][1].dataset, source)
        except NotAVolumeError as exc:
            return str(exc)
        except Exception as exc:  # a broken element can raise anything from pydicom
            return f"{source}: pixel data cannot be decoded: {exc}"
        for k, frame in slots[source]:
            rescale(values[frame.number or 0], frame.slope, frame.intercept, out[k])
        return None

    with ThreadPoolExecutor(max_workers=options.workers) as pool:
        results = list(pool.map(decode, slots))
    failures = {source: msg for source, msg in zip(slots, results, strict=True) if msg}
    return out, failures


def resample(stack: Stack, planes: np.ndarray) -> np.ndarray:
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
