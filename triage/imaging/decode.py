"""Pixel data -> stored values, for native and compressed transfer syntaxes.

Native (uncompressed) little-endian data is viewed in place with ``numpy.frombuffer``: no copy
and no per-file decoder set-up, which is most of pydicom's cost on a 512 x 512 slice. Read by
`triage.imaging.reading.read_dicom`, it is viewed where it lies in the file's bytes.
Everything else goes through pydicom's pixel backends, with the plugin chosen per transfer
syntax by measured speed (``PREFERRED_PLUGINS``): pyjpegls (CharLS) for JPEG-LS, python-gdcm for
JPEG 2000 and lossless JPEG, pylibjpeg (libjpeg) for 12-bit JPEG extended, which GDCM refuses,
and pylibjpeg's RLE plugin. All ship as wheels with no system library. If the preferred plugin
fails, pydicom's default order is tried. Deflate is inflated by pydicom when the file is read.

These decoders hold the GIL, so threads do not decode frames in parallel. Encapsulated pixel
data of a series is therefore decoded in a small pool of worker processes. The pool is started
once, on first use, with "spawn", so no thread state is forked. Each worker gets the frame bytes
and the few attributes a decoder needs, not the whole file.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from triage.errors import NotAVolumeError
from triage.imaging.frames import whole_number
from triage.imaging.reading import pixel_data_buffer, raw_text, raw_us
from triage.limits import MAX_FRAME_SIDE, MAX_VOXELS

log = logging.getLogger(__name__)


#: per transfer syntax, the decoding plugins in order of speed on a 512 x 512 CT slice (ms per
#: frame, measured here): JPEG-LS pyjpegls 5.2, gdcm 7.0, pylibjpeg 16.8; JPEG 2000 gdcm 14.2,
#: pylibjpeg 16.2; JPEG lossless gdcm 5.3, pylibjpeg 9.9; RLE pylibjpeg 1.5, pydicom 7.9; 12-bit
#: JPEG extended: only pylibjpeg decodes it. Other syntaxes use pydicom's default order.
PREFERRED_PLUGINS: dict[str, tuple[str, ...]] = {
    "1.2.840.10008.1.2.4.80": ("pyjpegls", "gdcm", "pylibjpeg"),
    "1.2.840.10008.1.2.4.81": ("pyjpegls", "gdcm", "pylibjpeg"),
    "1.2.840.10008.1.2.4.90": ("gdcm", "pylibjpeg"),
    "1.2.840.10008.1.2.4.91": ("gdcm", "pylibjpeg"),
    "1.2.840.10008.1.2.4.57": ("gdcm", "pylibjpeg"),
    "1.2.840.10008.1.2.4.70": ("gdcm", "pylibjpeg"),
    "1.2.840.10008.1.2.4.51": ("pylibjpeg",),
    "1.2.840.10008.1.2.5": ("pylibjpeg", "pydicom"),
}

#: In worker processes, one decoder per CPU: GDCM's JPEG 2000 decoder runs threads of its own
#: (19 ms of CPU for 12.5 ms of wall time a frame), which then compete with the other workers;
#: openjpeg via pylibjpeg (16 ms, one thread) decodes more frames per second there.
WORKER_PLUGINS: dict[str, tuple[str, ...]] = {
    **PREFERRED_PLUGINS,
    "1.2.840.10008.1.2.4.90": ("pylibjpeg", "gdcm"),
    "1.2.840.10008.1.2.4.91": ("pylibjpeg", "gdcm"),
}

_NATIVE_LITTLE = {
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2.1.99",  # deflated explicit VR little endian (inflated on reading)
}


def transfer_syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""


def check_size(rows: int, columns: int, frames: int, source: str) -> None:
    """Refuse absurd dimensions before any memory is allocated for them."""
    if rows > MAX_FRAME_SIDE or columns > MAX_FRAME_SIDE:
        raise NotAVolumeError(
            f"{source}: {rows} x {columns} pixels is larger than {MAX_FRAME_SIDE} per side"
        )
    if rows * columns * frames > MAX_VOXELS:
        raise NotAVolumeError(
            f"{source}: {rows} x {columns} x {frames} frames exceeds {MAX_VOXELS} voxels"
        )


def stored_values(
    ds: Dataset, source: str, plugins: dict[str, tuple[str, ...]] | None = None
) -> np.ndarray:
    """All frames of an instance as (frames, rows, columns) stored values (before rescale);
    colour images get a last axis for the samples."""
    frames = whole_number(raw_text(ds, 0x00280008) or 1)  # NumberOfFrames
    rows, columns = int(raw_us(ds, 0x00280010)), int(raw_us(ds, 0x00280011))
    check_size(rows, columns, frames, source)
    fast = _native(ds, frames, rows, columns, source)
    if fast is not None:
        return fast
    try:
        pixels = _decode(ds, plugins)
    except Exception as exc:  # each backend raises its own types
        raise NotAVolumeError(
            f"{source}: pixel data cannot be decoded "
            f"({transfer_syntax(ds) or 'unknown transfer syntax'}): {exc}"
        ) from exc
    samples = int(raw_us(ds, 0x00280002) or 1)  # SamplesPerPixel
    shape = (frames, rows, columns) if samples == 1 else (frames, rows, columns, samples)
    return np.asarray(pixels).reshape(shape)


def _decode(ds: Dataset, plugins: dict[str, tuple[str, ...]] | None = None) -> np.ndarray:
    """Decode with the fastest plugin measured for the transfer syntax, then any other."""
    syntax = transfer_syntax(ds)
    preferred = (plugins or PREFERRED_PLUGINS).get(syntax, ())
    if preferred:
        try:
            available = get_decoder(UID(syntax)).available_plugins
        except NotImplementedError:
            available = ()
        for plugin in (p for p in preferred if p in available):
            ds.pixel_array_options(decoding_plugin=plugin)
            try:
                return ds.pixel_array
            except Exception as exc:
                log.debug("%s could not decode %s: %s", plugin, syntax, exc)
        ds.pixel_array_options(decoding_plugin="")
    return ds.pixel_array


def _native(ds: Dataset, frames: int, rows: int, columns: int, source: str) -> np.ndarray | None:
    """A zero-copy view of native little-endian, one-sample pixel data; None for anything else."""
    if transfer_syntax(ds) not in _NATIVE_LITTLE or "PixelData" not in ds:
        return None
    try:
        allocated = int(raw_us(ds, 0x00280100))  # BitsAllocated
        stored = int(raw_us(ds, 0x00280101) or allocated)  # BitsStored
        signed = int(raw_us(ds, 0x00280103) or 0) == 1  # PixelRepresentation
        samples = int(raw_us(ds, 0x00280002) or 1)  # SamplesPerPixel
    except (AttributeError, TypeError, ValueError):
        return None
    if allocated not in (8, 16, 32) or samples != 1 or not 0 < stored <= allocated:
        return None
    found = pixel_data_buffer(ds)  # where the file's bytes hold it, when not read yet
    if found is not None:
        data, offset, length = found
    else:
        data, offset = ds.PixelData, 0
        if not isinstance(data, bytes | bytearray):
            return None
        length = len(data)
    needed = frames * rows * columns * allocated // 8
    if length < needed:
        raise NotAVolumeError(
            f"{source}: pixel data is truncated ({length} bytes, "
            f"{rows} x {columns} x {frames} frame(s) at {allocated} bits need {needed})"
        )
    dtype = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
    pixels = np.frombuffer(data, dtype=dtype, count=frames * rows * columns, offset=offset)
    if stored < allocated and not _within(pixels, stored, signed):
        shift = allocated - stored  # bits above BitsStored hold overlays or noise: drop them
        pixels = (pixels << shift) >> shift if signed else pixels & ((1 << stored) - 1)
    return pixels.reshape(frames, rows, columns)


def _within(pixels: np.ndarray, bits: int, signed: bool) -> bool:
    """No value uses more than ``bits`` bits, so masking would change nothing (two reductions
    cost less than masking into a new array)."""
    if signed:
        low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        return bool(pixels.min() >= low and pixels.max() <= high)
    return bool(pixels.max() < 1 << bits)


# -- decoding compressed frames in worker processes --------------------------------------------

#: the attributes a pixel decoder reads besides the pixel data itself
DECODER_ATTRIBUTES = (
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PixelRepresentation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PlanarConfiguration",
)

_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()
_pool_broken = threading.Event()


def decoder_pool_failed() -> None:
    """A worker could not start or died (e.g. run from a REPL, where "spawn" cannot re-import
    the main module): decode in threads from now on."""
    if not _pool_broken.is_set():
        log.warning("decoding processes are unavailable; decoding in threads instead")
    _pool_broken.set()


def is_encapsulated(ds: Dataset) -> bool:
    """Compressed (encapsulated) pixel data, as opposed to native."""
    syntax = transfer_syntax(ds)
    return bool(syntax) and syntax not in _NATIVE_LITTLE and syntax != "1.2.840.10008.1.2.2"


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


def portable(ds: Dataset) -> tuple[dict[str, Any], bytes]:
    """What a worker process needs to decode ``ds``: a few attributes and the pixel bytes."""
    attributes = {k: ds.get(k) for k in DECODER_ATTRIBUTES if k in ds}
    attributes["TransferSyntaxUID"] = transfer_syntax(ds)
    return attributes, bytes(ds.PixelData)


def decode_portable(attributes: dict[str, Any], pixel_data: bytes, source: str) -> np.ndarray:
    """Runs in a worker process: rebuild a minimal data set and decode it."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = attributes.pop("TransferSyntaxUID")
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.add_new(0x7FE00010, "OB", pixel_data)
    return stored_values(ds, source, WORKER_PLUGINS)


def decode_portable_batch(
    items: list[tuple[dict[str, Any], bytes, str]],
) -> list[np.ndarray | NotAVolumeError]:
    """Runs in a worker process: several instances per task, so that the cost of a task (its
    pickling both ways, the wake-ups) is paid once for all of them."""
    out: list[np.ndarray | NotAVolumeError] = []
    for attributes, pixel_data, source in items:
        try:
            out.append(decode_portable(attributes, pixel_data, source))
        except NotAVolumeError as exc:
            out.append(exc)
    return out
