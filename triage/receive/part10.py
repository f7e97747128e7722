"""The DICOM Part 10 file of a received C-STORE data set: preamble, prefix and File Meta
Information, as pynetdicom's ``Event.encoded_dataset()`` writes them, encoded here directly
(pynetdicom builds and writes a pydicom data set for it: about a millisecond per instance).
"""

from __future__ import annotations

import struct

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

_PREAMBLE = b"\x00" * 128 + b"DICM"


def _element(group: int, element: int, vr: bytes, value: bytes, pad: bytes) -> bytes:
    if len(value) % 2:
        value += pad
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def file_header(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information (explicit VR little endian) of an
    instance received in ``transfer_syntax_uid``; what follows is the data set as received.
    ValueError without a SOP class or instance UID (pynetdicom refuses those too)."""
    if not sop_class_uid or not sop_instance_uid:
        raise ValueError("the C-STORE request names no SOP class or no SOP instance")
    body = b"".join(
        (
            struct.pack("<HH2sHL", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01",
            _element(0x0002, 0x0002, b"UI", sop_class_uid.encode("ascii"), b"\0"),
            _element(0x0002, 0x0003, b"UI", sop_instance_uid.encode("ascii"), b"\0"),
            _element(0x0002, 0x0010, b"UI", transfer_syntax_uid.encode("ascii"), b"\0"),
            _element(0x0002, 0x0012, b"UI", PYNETDICOM_IMPLEMENTATION_UID.encode("ascii"), b"\0"),
            _element(
                0x0002, 0x0013, b"SH", PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii"), b" "
            ),
        )
    )
    length = struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(body))
    return _PREAMBLE + length + body
