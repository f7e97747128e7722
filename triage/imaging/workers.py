"""Decoding compressed pixel data in worker processes, from the moment each instance is read.

The JPEG, JPEG-LS, JPEG 2000 and RLE decoders hold the GIL (measured: two threads decode no
faster than one), so the compressed instances of a series are decoded in a small pool of
worker processes, started once, on first use, with "spawn" (no thread state is forked). Each
task is a batch of a few instances, each given as its transfer syntax, the decoder options
and the pixel bytes (not the file), so that the cost of a task is paid once for several.

`DecodingAhead` hands each compressed instance to the pool as soon as it is read, before the
rest of the series is read and the volume planned: the workers decode while this process
parses headers, where before they waited for it (on two cores, about the time of parsing).
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from triage.errors import NotAVolumeError
from triage.imaging.decode import (
    WORKER_PLUGINS,
    check_size,
    decode_encapsulated,
    decoder_options,
    is_encapsulated,
    transfer_syntax,
)

log = logging.getLogger(__name__)

PROCESS_DECODING_MIN_INSTANCES = 8  # fewer compressed images are decoded in threads
PROCESS_BATCH = 8  # compressed images per task sent to a decoding process, at most

#: an instance as a worker decodes it: transfer syntax, decoder options, pixel bytes, its name
Portable = tuple[str, dict[str, Any], bytes, str]

_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()
_pool_broken = threading.Event()


def decoder_pool_failed() -> None:
    """A worker could not start or died (e.g. run from a REPL, where "spawn" cannot re-import
    the main module): decode in threads from now on."""
    if not _pool_broken.is_set():
        log.warning("decoding processes are unavailable; decoding in threads instead")
    _pool_broken.set()


def decoder_pool(workers: int) -> ProcessPoolExecutor | None:
    """The shared pool of decoding processes; None on a single-CPU machine."""
    global _pool
    count = min(workers, os.cpu_count() or 1)
    if count < 2 or _pool_broken.is_set():
        return None
    with _pool_lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("spawn"))
            atexit.register(_pool.shutdown, wait=False, cancel_futures=True)
        return _pool


def portable(ds: Dataset, source: str) -> Portable:
    """What a worker process needs to decode ``ds``."""
    return transfer_syntax(ds), decoder_options(ds), bytes(ds.PixelData), source


def decode_portable(item: Portable) -> np.ndarray:
    """Runs in a worker process: the instance's frames as (frames, rows, columns)."""
    syntax, options, pixel_data, source = item
    frames, rows, columns = options["number_of_frames"], options["rows"], options["columns"]
    check_size(rows, columns, frames, source)
    pixels = decode_encapsulated(syntax, options, pixel_data, source, WORKER_PLUGINS)
    return np.asarray(pixels).reshape(frames, rows, columns)


def decode_portable_batch(items: list[Portable]) -> list[np.ndarray | NotAVolumeError]:
    """Runs in a worker process: several instances per task."""
    out: list[np.ndarray | NotAVolumeError] = []
    for item in items:
        try:
            out.append(decode_portable(item))
        except NotAVolumeError as exc:
            out.append(exc)
        except Exception as exc:  # a value the decoder options do not allow, say
            out.append(NotAVolumeError(f"{item[3]}: pixel data cannot be decoded: {exc}"))
    return out


class InBatch:
    """One instance's share of a batch decoded in a worker process."""

    def __init__(self, batch: Future[list[np.ndarray | NotAVolumeError]], index: int) -> None:
        self.batch, self.index = batch, index

    def result(self) -> np.ndarray:
        """Its stored values; NotAVolumeError when it cannot be decoded, BrokenProcessPool
        when the worker died."""
        value = self.batch.result()[self.index]
        if isinstance(value, NotAVolumeError):
            raise value
        return value


class DecodingAhead:
    """Compressed instances handed to the decoding processes as they are read, in batches;
    nothing when the series has too few instances to be worth it or there is one CPU."""

    def __init__(self, expected: int, workers: int) -> None:
        self._pool = decoder_pool(workers) if expected >= PROCESS_DECODING_MIN_INSTANCES else None
        self._size = min(PROCESS_BATCH, max(1, expected // (4 * max(1, workers))))
        self._batch: list[Portable] = []
        self._pending: dict[str, InBatch] = {}

    def add(self, ds: Dataset, source: str) -> None:
        if self._pool is None or not is_encapsulated(ds):
            return
        try:
            self._batch.append(portable(ds, source))
        except Exception:  # unreadable here too: decoding in a thread names the reason
            return
        if len(self._batch) >= self._size:
            self.flush()

    def flush(self) -> None:
        if self._pool is None or not self._batch:
            return
        batch, self._batch = self._batch, []
        try:
            future = self._pool.submit(decode_portable_batch, batch)
        except (BrokenProcessPool, RuntimeError):  # dead, or shut down at exit
            decoder_pool_failed()
            self._pool = None
            return
        for index, item in enumerate(batch):
            self._pending[item[3]] = InBatch(future, index)

    def pending(self, source: str) -> InBatch | None:
        """The decoding under way for ``source``, if it was handed over (and flushed)."""
        return self._pending.get(source)

    def cancel(self) -> None:
        """Drop what has not started: the series will not be assembled (its reading failed)."""
        self._batch = []
        for job in self._pending.values():
            job.batch.cancel()
