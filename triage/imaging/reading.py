"""DICOM file bytes -> pydicom Dataset: the one `pydicom.dcmread` makes, in half the time.

pydicom's element reader is general (any byte order, VR switches, deferred values, stop
conditions) and is pure Python: on the 512 x 512 CT slices of the volume benchmark it costs
about 0.75 ms a file, which over a series is more than decoding its pixels. The files a scanner
sends are nearly always little endian with a file meta header, so this module walks their
elements with `struct.unpack_from` over the bytes already in memory, building the very
`RawDataElement` tuples (tag, VR, length, value, offset, encoding) that pydicom builds and
converting nothing: about 0.35 ms a file. Large native pixel data is left deferred (as
``dcmread(defer_size=...)`` leaves it): the decoder views it where it lies in the file's bytes
(`pixel_data_buffer`), and ``ds.PixelData`` still reads it on use.

At the first element it does not handle exactly as pydicom would (an undefined length, a
sequence or item delimiter, an unknown or missing VR, a value cut short by the end of the
data), pydicom's own element generator reads the rest of the data set from that point, in the
state it would be in there. Files it does not take at all (no preamble, big endian, deflate,
a VR that does not match the transfer syntax, command elements) are read by `pydicom.dcmread`
as they are. Either way the data set, its warnings and its errors are pydicom's, element for
element; the tests check that on the real files and on truncated and corrupted copies.

`raw_text` and `raw_us` read the few attributes volume assembly needs from the raw elements,
without pydicom's conversion and validation.
"""

from __future__ import annotations

import functools
import io
from collections.abc import MutableSequence
from struct import Struct
from typing import Any

import pydicom
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import (
    DataElement,
    RawDataElement,
    convert_raw_data_element,
    empty_value_for_VR,
)
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filereader import data_element_generator
from pydicom.tag import BaseTag
from pydicom.uid import UID, ImplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR

#: each VR as written, with the size of an element's header (tag, VR, length) in that VR
_VRS = {vr.encode(): (str(vr), 12 if vr in EXPLICIT_VR_LENGTH_32 else 8) for vr in VR}
_EXPLICIT = Struct("<HH2sH").unpack_from
_IMPLICIT = Struct("<HHL").unpack_from
_LENGTH = Struct("<L").unpack_from
_UNDEFINED = 0xFFFFFFFF
_TRANSFER_SYNTAX = 0x00020010
_CHARSET = 0x00080005
PIXEL_DATA = 0x7FE00010
_Elements = dict[BaseTag, RawDataElement | DataElement]
DEFER_PIXELS_BYTES = 4096  # native pixel data larger than this is read where it lies


def read_dicom(data: bytes) -> Dataset:
    """The data set of a DICOM file given as its bytes, as `pydicom.dcmread` reads it (errors
    included), except that large native pixel data is left deferred, as with ``defer_size``:
    `pixel_data_buffer` finds it in ``data`` without a copy, and ``ds.PixelData`` reads it."""
    syntax = _fast_syntax(data)
    if syntax is None:
        return pydicom.dcmread(io.BytesIO(data))
    file_meta, start, implicit = syntax
    elements, stop = _elements(data, start, implicit=implicit, group=None)
    fp = io.BytesIO(data)
    if stop < len(data):  # pydicom's own reader from there on, in the state it would be in
        encoding: str | MutableSequence[str] = default_encoding
        if _CHARSET in elements:
            charset = _value(elements[BaseTag(_CHARSET)])
            encoding = convert_encodings(charset)
        fp.seek(stop)
        try:
            for elem in data_element_generator(fp, implicit, True, encoding=encoding):
                elements[elem.tag] = elem
        except (EOFError, NotImplementedError):  # pydicom warns or raises, and keeps nothing
            return pydicom.dcmread(io.BytesIO(data))
    ds = FileDataset(fp, elements, data[:128], file_meta, implicit, True)
    ds.set_original_encoding(implicit, True, ds._character_set)
    return ds


def pixel_data_buffer(ds: Dataset) -> tuple[bytes, int, int] | None:
    """Where the pixel data of a data set read by `read_dicom` lies, as (bytes, offset,
    length), without reading it; None when it is not deferred (then use ``ds.PixelData``)."""
    elem = ds.get_item(PIXEL_DATA, keep_deferred=True) if PIXEL_DATA in ds else None
    if not isinstance(elem, RawDataElement) or elem.value is not None or not elem.length:
        return None
    buffer = getattr(ds, "buffer", None)
    if not isinstance(buffer, io.BytesIO):
        return None
    data = buffer.getvalue()  # the same bytes object: a BytesIO shares what it was given
    if elem.value_tell + elem.length > len(data):
        return None
    return data, elem.value_tell, elem.length


def _fast_syntax(data: bytes) -> tuple[FileMetaDataset, int, bool] | None:
    """The file meta information, where the data set starts and whether it is implicit VR,
    for the files read here; None for those left to pydicom."""
    if len(data) < 140 or data[128:132] != b"DICM":
        return None  # no preamble: pydicom refuses it (or reads it with force)
    meta, start = _elements(data, 132, implicit=False, group=2)
    if _TRANSFER_SYNTAX not in meta or start + 8 > len(data):
        return None  # pydicom guesses the encoding, or the data set is empty
    if data[start : start + 2] in (b"\x00\x00", b"\x02\x00"):
        return None  # command set elements, or meta elements not read here
    file_meta = FileMetaDataset(meta)
    file_meta.set_original_encoding(False, True, default_encoding)
    try:
        implicit = _implicit_vr(str(file_meta.TransferSyntaxUID))  # converted, as pydicom does
    except (ValueError, TypeError):
        return None  # a malformed transfer syntax
    if implicit is None or _looks_explicit(data, start) == implicit:
        return None  # not one read here, or pydicom warns and switches: let it
    return file_meta, start, implicit


@functools.lru_cache(maxsize=64)
def _implicit_vr(syntax: str) -> bool | None:
    """Whether a little endian transfer syntax read here is implicit VR; None for the others
    (big endian, deflate, private or unknown ones)."""
    try:
        uid = UID(syntax)
        if not uid.is_transfer_syntax or uid.is_deflated or not uid.is_little_endian:
            return None
        implicit = syntax == ImplicitVRLittleEndian
        return implicit if uid.is_implicit_VR == implicit else None
    except ValueError:
        return None


def _value(elem: RawDataElement | DataElement) -> Any:
    return convert_raw_data_element(elem).value if isinstance(elem, RawDataElement) else elem.value


def _looks_explicit(data: bytes, offset: int) -> bool:
    """The first element of a data set has a VR where an explicit VR would be."""
    first, second = data[offset + 4], data[offset + 5]
    return 0x40 < first < 0x5B and 0x40 < second < 0x5B


def _elements(data: bytes, offset: int, implicit: bool, group: int | None) -> tuple[_Elements, int]:
    """The raw elements from ``offset`` on (only those of ``group`` when given) and where the
    walk stopped: the end, or the first element left to pydicom."""
    out: _Elements = {}
    end = len(data)
    vrs, new, raw, tag_of = _VRS, tuple.__new__, RawDataElement, BaseTag
    while offset + 8 <= end:
        if implicit:
            number, element, length = _IMPLICIT(data, offset)
            vr, start = None, offset + 8
        else:
            number, element, code, length = _EXPLICIT(data, offset)
            known = vrs.get(code)
            if known is None:
                break  # an unknown VR, or implicit VR inside explicit data
            vr, start = known
            if start == 12:
                if offset + 12 > end:
                    break
                length = _LENGTH(data, offset + 8)[0]
            start += offset
        if (group is not None and number != group) or number == 0xFFFE:
            break
        if length == _UNDEFINED or start + length > end:
            break
        tag = number << 16 | element
        if not length:
            value = empty_value_for_VR(vr, raw=True)
        elif tag == PIXEL_DATA and length > DEFER_PIXELS_BYTES:
            value = None  # deferred, as dcmread(defer_size=...) leaves it: read when used
        else:
            value = data[start : start + length]
        key = tag_of(tag)
        out[key] = new(raw, (key, vr, length, value, start, implicit, True, True, False))
        offset = start + length
    return out, offset if offset + 8 <= end else end  # pydicom ignores a tail of < 8 bytes


#: the VRs whose raw value is text that `raw_text` can split; None: implicit VR (the caller
#: knows the attribute is text)
_TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "SH", "TM", "UI", None}


def raw_text(ds: Dataset, tag: int) -> Any:
    """A text attribute's value (CS, DS, IS, UI...): a str, a list of str for several values,
    None when absent or empty. Taken from the raw bytes when pydicom has not converted the
    element yet (its conversion and validation cost about 10 us an element, which over the
    few attributes a slice needs is more than reading the whole header); otherwise pydicom's
    value."""
    elem = ds.get_item(tag)
    if elem is None:
        return None
    raw = elem.value if isinstance(elem, RawDataElement) else None
    if isinstance(raw, bytes) and elem.VR in _TEXT_VRS:
        text = raw.decode("latin-1")
        if "\\" in text:
            return [part.strip(" \x00") for part in text.split("\\")]
        return text.strip(" \x00") or None
    value = ds[tag].value
    return None if value == "" else value


def raw_us(ds: Dataset, tag: int) -> Any:
    """An unsigned short attribute's value (Rows, BitsAllocated...), from the raw bytes when not
    converted yet; otherwise pydicom's value; None when absent."""
    elem = ds.get_item(tag)
    if elem is None:
        return None
    raw = elem.value if isinstance(elem, RawDataElement) else None
    if isinstance(raw, bytes) and len(raw) == 2 and elem.VR in ("US", None):
        return raw[0] | raw[1] << 8 if elem.is_little_endian else raw[0] << 8 | raw[1]
    return ds[tag].value
