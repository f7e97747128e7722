"""The instance counts a sender announces in each instance: read from the header as DICOM
defines them, a count that cannot be right read as wrong (never a reason to refuse the
instance), and kept in the catalogue by a real receiver."""

from __future__ import annotations

import threading
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE
from support.factories import phantom_ct_series
from support.receivers import open_receiver, stop_later

from triage.catalogue import WRONG_COUNT, Catalogue
from triage.dimse import SUCCESS
from triage.receive.announced import AnnouncedCounts, announced_counts
from triage.receive.receiver import describe_instance


def one_image(**attributes: object) -> Dataset:
    (ds,) = phantom_ct_series("announced", 0, (8, 8, 1))
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def with_raw(ds: Dataset, keyword: str, value: bytes) -> Dataset:
    """``ds`` with ``keyword`` holding ``value`` as received, undecoded."""
    tag = Tag(keyword)
    ds[tag] = RawDataElement(tag, "IS", len(value), value, 0, False, True)
    return ds


def test_nothing_announced() -> None:
    assert announced_counts(one_image()) == AnnouncedCounts(None, None)


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"ImagesInAcquisition": 120}, AnnouncedCounts(120, None)),
        ({"NumberOfSeriesRelatedInstances": 120}, AnnouncedCounts(120, None)),
        ({"NumberOfStudyRelatedInstances": 300}, AnnouncedCounts(None, 300)),
        (
            {"ImagesInAcquisition": 120, "NumberOfSeriesRelatedInstances": "120"},
            AnnouncedCounts(120, None),
        ),
        (
            {"ImagesInAcquisition": 120, "NumberOfSeriesRelatedInstances": 240},
            AnnouncedCounts(WRONG_COUNT, None),  # which one is the series'? neither is used
        ),
        (
            {"NumberOfSeriesRelatedInstances": 120, "NumberOfStudyRelatedInstances": 300},
            AnnouncedCounts(120, 300),
        ),
    ],
)
def test_counts_read(attributes: dict[str, object], expected: AnnouncedCounts) -> None:
    assert announced_counts(one_image(**attributes)) == expected


@pytest.mark.parametrize("value", [b"abc", b"0 ", b"-3", b"1\\2", b"1.5", b"99999999999"])
def test_a_count_that_cannot_be_right_is_wrong_and_the_image_is_taken(value: bytes) -> None:
    ds = with_raw(one_image(), "ImagesInAcquisition", value)
    with_raw(ds, "NumberOfStudyRelatedInstances", value)
    got = describe_instance(ds, str(ds.file_meta.TransferSyntaxUID), 100)
    assert (got.announced_series_instances, got.announced_study_instances) == (
        WRONG_COUNT,
        WRONG_COUNT,
    )


def test_images_in_acquisition_counts_a_series_of_ct_images_of_one_time_point_only() -> None:
    mr = one_image(Modality="MR", ImagesInAcquisition=15)
    assert announced_counts(mr) == AnnouncedCounts(None, None)
    dynamic = one_image(ImagesInAcquisition=15, NumberOfTemporalPositions=10)
    assert announced_counts(dynamic) == AnnouncedCounts(None, None)
    dynamic.NumberOfSeriesRelatedInstances = 150  # what a router counted: still read
    assert announced_counts(dynamic) == AnnouncedCounts(150, None)
    one_time_point = one_image(ImagesInAcquisition=15, NumberOfTemporalPositions=1)
    assert announced_counts(one_time_point) == AnnouncedCounts(15, None)


def test_a_real_fmri_series_saying_15_images_in_acquisition_is_not_complete_at_15(
    shared_data: Path, tmp_path: Path
) -> None:
    """GE MR750 fMRI: 150 images (15 locations x 10 time points), ImagesInAcquisition 15 in
    every one of them."""
    files = sorted((shared_data / "mr_ge_fmri_4d").glob("*.dcm"))
    images = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    assert len(images) == 150 and {str(ds.ImagesInAcquisition) for ds in images} == {"15"}
    records = [describe_instance(ds, str(ds.file_meta.TransferSyntaxUID), 100) for ds in images]
    assert {r.announced_series_instances for r in records} == {None}
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'catalogue.db'}")
    try:
        for record in records[:15]:
            catalogue.record_instance(record)
        assert catalogue.claim_next("w", quiet_seconds=3600) is None
    finally:
        catalogue.close()


def test_an_empty_count_is_no_count() -> None:
    ds = with_raw(one_image(), "ImagesInAcquisition", b"")
    assert announced_counts(ds) == AnnouncedCounts(None, None)


def test_a_receiver_keeps_the_counts_and_the_study_is_complete_at_once(
    tmp_path: Path, stopper: list[threading.Thread]
) -> None:
    series = phantom_ct_series("announced-rx", 1, (8, 8, 3))
    for ds in series:
        ds.ImagesInAcquisition = len(series)
        ds.NumberOfStudyRelatedInstances = len(series)
    rx = open_receiver(tmp_path)
    try:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
        assoc = ae.associate("127.0.0.1", rx.port, ae_title="TRIAGE")
        assert assoc.is_established
        try:
            for n, ds in enumerate(series):
                assert rx.catalogue.claim_next("w", quiet_seconds=3600) is None, f"at {n}"
                assert assoc.send_c_store(ds).Status == SUCCESS
        finally:
            assoc.release()
        claim = rx.catalogue.claim_next("w", quiet_seconds=3600)
        assert claim is not None and claim.study_instance_uid == series[0].StudyInstanceUID
    finally:
        stop_later(stopper, rx)
