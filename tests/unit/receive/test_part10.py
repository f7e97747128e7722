"""The Part 10 header the receiver writes before a received data set: the bytes pynetdicom's
``Event.encoded_dataset()`` writes."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.uid import UID
from pynetdicom.dsutils import create_file_meta, encode_file_meta

from triage.receive.part10 import file_header


@pytest.mark.parametrize(
    ("sop_class", "sop_instance", "syntax"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "1.2.840.10008.1.2.1"),  # even, even, odd
        ("1.2.840.10008.5.1.4.1.1.4", "1.2.345", "1.2.840.10008.1.2"),
        ("1.2.840.10008.5.1.4.1.1.88.34", "2.25.1" + "9" * 57, "1.2.840.10008.1.2.4.90"),
    ],
)
def test_the_header_is_the_one_pynetdicom_writes(
    sop_class: str, sop_instance: str, syntax: str
) -> None:
    expected = (
        b"\x00" * 128
        + b"DICM"
        + encode_file_meta(
            create_file_meta(
                sop_class_uid=UID(sop_class),
                sop_instance_uid=UID(sop_instance),
                transfer_syntax=UID(syntax),
            )
        )
    )
    assert file_header(sop_class, sop_instance, syntax) == expected


@pytest.mark.parametrize(("sop_class", "sop_instance"), [("", "1.2.3"), ("1.2.3", "")])
def test_a_request_without_its_uids_has_no_header(sop_class: str, sop_instance: str) -> None:
    with pytest.raises(ValueError, match="names no SOP class or no SOP instance"):
        file_header(sop_class, sop_instance, "1.2.840.10008.1.2.1")
    with pytest.raises(AttributeError):  # as pynetdicom's encoded_dataset() would
        encode_file_meta(
            create_file_meta(
                sop_class_uid=UID(sop_class),
                sop_instance_uid=UID(sop_instance),
                transfer_syntax=UID("1.2.840.10008.1.2.1"),
            )
        )


def test_a_header_and_a_data_set_read_as_a_file() -> None:
    ds = pydicom.Dataset()
    ds.PatientID = "X"
    body = io.BytesIO()
    ds.save_as(body, implicit_vr=False, little_endian=True)
    raw = file_header("1.2.840.10008.5.1.4.1.1.2", "1.2.3", "1.2.840.10008.1.2.1") + body.getvalue()
    back = pydicom.dcmread(io.BytesIO(raw))
    assert back.file_meta.MediaStorageSOPInstanceUID == "1.2.3"
    assert back.PatientID == "X"
