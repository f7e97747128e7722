"""Pixel data -> stored values, for native and compressed transfer syntaxes.

Native (uncompressed) little-endian data is viewed in place with ``numpy.frombuffer``: no copy
and no per-file decoder set-up, which is most of pydicom's cost on a 512 x 512 slice. Read by
`triage.imaging.reading.read_dicom`, it is viewed where it lies in the file's bytes.
Everything else goes through pydicom's pixel backends, with the plugin chosen per transfer
syntax by measured speed (``PREFERRED_PLUGINS``): pyjpegls (CharLS) for JPEG-LS, python-gdcm for
JPEG 2000 and lossless JPEG, pylibjpeg (libjpeg) for 12-bit JPEG extended, which GDCM refuses,
and pylibjpeg's RLE plugin. All ship as wheels with no system library. If the preferred plugin
fails, pydicom's default order is tried. Deflate is inflated by pydicom when the file is read.

These decoders hold the GIL, so threads do not decode frames in parallel: the compressed
instances of a series are decoded in worker processes (`triage.imaging.workers`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
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
    syntax = transfer_syntax(ds)
    try:
        if is_encapsulated(ds) and "PixelData" in ds:
            pixels = decode_encapsulated(syntax, decoder_options(ds), ds.PixelData, source, plugins)
        else:
            pixels = ds.pixel_array
    except NotAVolumeError:
        raise
    except Exception as exc:  # each backend raises its own types
        raise NotAVolumeError(
            f"{source}: pixel data cannot be decoded ({syntax or 'unknown transfer syntax'}): {exc}"
        ) from exc
    samples = int(raw_us(ds, 0x00280002) or 1)  # SamplesPerPixel
    shape = (frames, rows, columns) if samples == 1 else (frames, rows, columns, samples)
    return np.asarray(pixels).reshape(shape)


#: the Image Pixel attributes a decoder reads, as pydicom's decoder options
_DECODER_OPTIONS = {
    0x00280002: ("samples_per_pixel", raw_us),
    0x00280004: ("photometric_interpretation", raw_text),
    0x00280006: ("planar_configuration", raw_us),
    0x00280008: ("number_of_frames", raw_text),
    0x00280010: ("rows", raw_us),
    0x00280011: ("columns", raw_us),
    0x00280100: ("bits_allocated", raw_us),
    0x00280101: ("bits_stored", raw_us),
    0x00280103: ("pixel_representation", raw_us),
}


def decoder_options(ds: Dataset) -> dict[str, Any]:
    """What a pixel decoder reads from ``ds``, as `pydicom.pixels.as_pixel_options` gives it,
    read from the raw elements."""
    options: dict[str, Any] = {}
    for tag, (name, read) in _DECODER_OPTIONS.items():
        value = read(ds, tag)
        if value is not None:
            options[name] = value
    options["number_of_frames"] = whole_number(options.get("number_of_frames") or 1)
    if 0x7FE00001 in ds and 0x7FE00002 in ds:
        options["extended_offsets"] = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    return options


def decode_encapsulated(
    syntax: str,
    options: dict[str, Any],
    pixel_data: bytes,
    source: str,
    plugins: dict[str, tuple[str, ...]] | None = None,
) -> np.ndarray:
    """Encapsulated pixel data decoded by pydicom's decoder for the syntax, with the plugins
    measured fastest first, then any other. The decoder is given the bytes and the options,
    not a data set: that skips pydicom's reading of the data set, 2.5 ms a frame (30 % of
    decoding a 12-bit JPEG slice)."""
    try:
        decoder = get_decoder(UID(syntax))
    except NotImplementedError as exc:
        raise NotAVolumeError(f"{source}: pixel data cannot be decoded ({syntax}): {exc}") from exc
    available = decoder.available_plugins
    order = [p for p in (plugins or PREFERRED_PLUGINS).get(syntax, ()) if p in available]
    failure: Exception | None = None
    for plugin in [*order, ""]:  # "": every plugin, in pydicom's order
        try:
            pixels, _ = decoder.as_array(pixel_data, decoding_plugin=plugin, **options)
            return pixels
        except Exception as exc:  # each backend raises its own types
            log.debug("%s could not decode %s: %s", plugin or "pydicom", syntax, exc)
            failure = exc
    raise NotAVolumeError(
        f"{source}: pixel data cannot be decoded ({syntax}): {failure}"
    ) from failure


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


def is_encapsulated(ds: Dataset) -> bool:
    """Compressed (encapsulated) pixel data, as opposed to native."""
    syntax = transfer_syntax(ds)
    return bool(syntax) and syntax not in _NATIVE_LITTLE and syntax != "1.2.840.10008.1.2.2"


def rescale(values: np.ndarray, slope: float, intercept: float, out: np.ndarray) -> None:
    """``values * slope + intercept`` in float32 into ``out``: one pass when the slope is 1."""
    if slope == 1:
        np.add(values, np.float32(intercept), out=out, casting="unsafe")
        return
    np.multiply(values, np.float32(slope), out=out, casting="unsafe")
    if intercept:
        out += np.float32(intercept)
