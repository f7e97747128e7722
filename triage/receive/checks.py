"""The checks an instance passes before it is stored: complete, and pixel data that can be what
its header says. Each refusal is a ``Rejected`` with the DICOM status and the reason; the
receiver answers the status and keeps the bytes in quarantine."""

from __future__ import annotations

import struct

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from triage.dimse import CANNOT_UNDERSTAND, DATASET_DOES_NOT_MATCH
from triage.limits import MAX_FRAME_SIDE, MAX_PIXEL_BYTES

_NATIVE_SYNTAXES = {
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
}


class Rejected(Exception):
    """The instance cannot be used; carries the DICOM status and the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def check_complete(ds: Dataset) -> None:
    """Refuse a data set that ends before its elements do (a transfer cut short).

    pydicom reads what is there without complaint: a length running past the end gives a short
    value, and a data set cut inside an undefined-length element reads as no elements at all.
    """
    if len(ds) == 0:
        raise Rejected(
            CANNOT_UNDERSTAND, "no element could be read: the data set is cut short or not DICOM"
        )
    for tag in list(ds.keys()):  # the raw elements: iterating ds would convert each
        try:
            elem = ds.get_item(tag, keep_deferred=True)
        except Exception as exc:  # pydicom raises many types on corrupt elements
            raise Rejected(CANNOT_UNDERSTAND, f"the data set cannot be decoded: {exc}") from exc
        if not isinstance(elem, RawDataElement) or elem.length == 0xFFFFFFFF:
            continue
        arrived = len(elem.value or b"")
        if arrived < elem.length:
            raise Rejected(
                DATASET_DOES_NOT_MATCH,
                f"element {elem.tag} declares {elem.length} bytes where {arrived} arrived: "
                "the data set is truncated",
            )


def check_pixel_data(ds: Dataset, transfer_syntax: str) -> None:
    """Refuse pixel data that cannot be what the header says, before anything allocates for it.

    Absurd declared sizes (over MAX_FRAME_SIDE a side, over MAX_PIXEL_BYTES decoded), native
    data shorter than declared (a truncated transfer) and compressed data that is not complete
    encapsulated fragments are answered 0xA900 with the reason.
    """
    if "PixelData" not in ds:
        return
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.BitsAllocated)
        encapsulated = ds["PixelData"].is_undefined_length
        actual = len(ds.PixelData)
    except Exception as exc:
        raise Rejected(DATASET_DOES_NOT_MATCH, f"image pixel attributes unusable: {exc}") from exc
    declared = f"Rows {rows}, Columns {cols}, NumberOfFrames {frames}, SamplesPerPixel {samples}"
    if min(rows, cols, frames) < 1 or not 1 <= samples <= 4:
        raise Rejected(DATASET_DOES_NOT_MATCH, f"image size is not usable: {declared}")
    if bits not in (1, 8, 16, 32, 64):
        raise Rejected(DATASET_DOES_NOT_MATCH, f"BitsAllocated {bits} is not 1, 8, 16, 32 or 64")
    if rows > MAX_FRAME_SIDE or cols > MAX_FRAME_SIDE:
        raise Rejected(
            DATASET_DOES_NOT_MATCH,
            f"frames of {rows} x {cols} pixels exceed the limit of "
            f"{MAX_FRAME_SIDE} x {MAX_FRAME_SIDE}",
        )
    expected = (rows * cols * frames * samples * bits + 7) // 8
    if expected > MAX_PIXEL_BYTES:
        raise Rejected(
            DATASET_DOES_NOT_MATCH,
            f"the header declares {expected} bytes of decoded pixel data ({declared}, "
            f"BitsAllocated {bits}), over the limit of {MAX_PIXEL_BYTES} bytes per instance",
        )
    if transfer_syntax in _NATIVE_SYNTAXES:
        if encapsulated:
            raise Rejected(
                DATASET_DOES_NOT_MATCH,
                f"pixel data is encapsulated although transfer syntax {transfer_syntax} is native",
            )
        if actual < expected:
            raise Rejected(
                DATASET_DOES_NOT_MATCH,
                f"pixel data is truncated: {actual} bytes where Rows x Columns x frames says "
                f"{expected}",
            )
        return
    if not encapsulated:
        raise Rejected(
            DATASET_DOES_NOT_MATCH,
            f"pixel data is not encapsulated although transfer syntax {transfer_syntax} is "
            "compressed",
        )
    try:
        fragments = _count_fragments(ds.PixelData)
    except ValueError as exc:
        reason = f"compressed pixel data is malformed: {exc}"
        raise Rejected(DATASET_DOES_NOT_MATCH, reason) from exc
    if fragments < frames:  # a fragment never holds more than one frame (PS3.5 A.4)
        raise Rejected(
            DATASET_DOES_NOT_MATCH,
            f"compressed pixel data is truncated: {fragments} fragment(s) for {frames} frame(s)",
        )


def _count_fragments(data: bytes) -> int:
    """Fragments after the Basic Offset Table; ValueError unless every item is complete."""
    offset, items = 0, 0
    while offset < len(data):
        if offset + 8 > len(data):
            raise ValueError(f"an item header is cut short at byte {offset}")
        group, element, length = struct.unpack_from("<HHL", data, offset)
        if (group, element) != (0xFFFE, 0xE000):
            raise ValueError(f"({group:04X},{element:04X}) at byte {offset} is not an item")
        if offset + 8 + length > len(data):
            left = len(data) - offset - 8
            raise ValueError(f"the item at byte {offset} declares {length} bytes, {left} follow")
        offset += 8 + length
        items += 1
    if items == 0:
        raise ValueError("no Basic Offset Table item")
    return items - 1
