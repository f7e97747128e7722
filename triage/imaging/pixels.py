"""The pixels of a planned volume: decoded once per instance, rescaled, resampled if uneven.

Each instance is decoded once, in parallel threads, and each of its frames rescaled with its own
RescaleSlope/Intercept into its slot; compressed instances, whose decoders hold the GIL, are
decoded in worker processes when there are enough of them (`triage.imaging.decode`). A stack
whose steps were uneven is then resampled linearly along its line onto its regular grid.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

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
from triage.imaging.frames import Frame
from triage.imaging.geometry import DEFAULT_OPTIONS, AssemblyOptions, Stack

PROCESS_DECODING_MIN_INSTANCES = 8  # fewer compressed images are decoded in threads
PROCESS_BATCH = 8  # compressed images per task sent to a decoding process, at most


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
            rescale(values[frame.number or 0], frame.slope, frame.intercept, out[k])
        return None

    with ThreadPoolExecutor(max_workers=options.workers) as pool:
        results = list(pool.map(decode, slots))
    failures = {source: msg for source, msg in zip(slots, results, strict=True) if msg}
    return out, failures


def rescale(values: np.ndarray, slope: float, intercept: float, out: np.ndarray) -> None:
    """``values * slope + intercept`` in float32 into ``out``: one pass when the slope is 1."""
    if slope == 1:
        np.add(values, np.float32(intercept), out=out, casting="unsafe")
        return
    np.multiply(values, np.float32(slope), out=out, casting="unsafe")
    if intercept:
        out += np.float32(intercept)


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
