"""What a PACS forwards with a study is kept and does not disturb triage.

Secondary captures, dose reports, presentation states, key object selections, SRs and this
node's own result SR: each is accepted over a real association in its own SOP class and
transfer syntax, stored as it came, catalogued, and a study that is already triaged stays
triaged (same generation, no new triage run). What ``TRIAGE_ACCEPT_SOP_CLASSES`` leaves out is
refused at presentation-context negotiation (C-STORE) or answered 0x0122 (WADO-RS).
"""

from __future__ import annotations

import copy
import io
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    ComprehensiveSRStorage,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
)
from pynetdicom.dsutils import encode
from sqlalchemy import select
from support.factories import phantom_ct_series
from support.forwarded import REAL_FILES, generated_objects, part10, real_objects
from support.paths import SHARED_DATA
from support.scu import associate, store

from triage.catalogue import Catalogue
from triage.catalogue.database import Study
from triage.config import load_settings
from triage.dimse import SOP_CLASS_NOT_SUPPORTED, SUCCESS
from triage.receive.receiver import Receiver, describe_instance
from triage.receive.sop_classes import (
    ANALYSED_CLASSES,
    IMAGE_CLASSES,
    STORAGE_CLASSES,
    accepted_classes,
    retrieve_contexts,
    transfer_syntaxes_for,
)
from triage.results import Priority
from triage.store import LocalStore

SIEMENS_CSA_NON_IMAGE = "1.3.12.2.1107.5.9.1"  # a private storage class routers forward


@pytest.fixture(scope="module")
def images() -> list[Dataset]:
    return phantom_ct_series("test_forwarded", 0, (32, 32, 4))


@pytest.fixture(scope="module")
def forwarded(images: list[Dataset]) -> dict[str, Dataset]:
    return {**real_objects(images[0]), **generated_objects(images)}


def open_receiver(tmp_path: Path, accepted: tuple[str, ...] = STORAGE_CLASSES) -> Receiver:
    tmp_path.mkdir(parents=True, exist_ok=True)
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'catalogue.db'}")
    rx = Receiver(LocalStore(tmp_path / "store"), catalogue, "TRIAGE", accepted=accepted)
    rx.start("127.0.0.1", 0)
    return rx


def stop_later(stopper: list[threading.Thread], rx: Receiver) -> None:
    """Stop in the background (pynetdicom's poll loop takes up to 0.5 s)."""

    def stop() -> None:
        rx.stop()
        rx.catalogue.close()

    thread = threading.Thread(target=stop)
    thread.start()
    stopper.append(thread)


@pytest.fixture
def receiver(tmp_path: Path, stopper: list[threading.Thread]) -> Iterator[Receiver]:
    rx = open_receiver(tmp_path)
    yield rx
    stop_later(stopper, rx)


def triage_once(rx: Receiver, study_uid: str) -> None:
    """What the node does when the study is quiet: claim it, record a routine result."""
    generation = rx.catalogue.claim_for_triage(study_uid)
    assert generation == 1
    assert rx.catalogue.finish_triage(study_uid, generation, [], Priority.ROUTINE, None)


def last_instance_at(rx: Receiver, study_uid: str) -> datetime:
    with rx.catalogue.session() as s:
        when = s.scalar(select(Study.last_instance_at).where(Study.study_instance_uid == study_uid))
    assert when is not None
    return when


def stored_bytes(rx: Receiver, ds: Dataset) -> bytes:
    return rx.store.get(f"raw/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm")


def stored(rx: Receiver, ds: Dataset) -> Dataset:
    return pydicom.dcmread(io.BytesIO(stored_bytes(rx, ds)))


def data_set_bytes(part10_file: bytes) -> bytes:
    """What follows the file meta information (its length is in (0002,0000))."""
    assert part10_file[128:132] == b"DICM"
    (meta_length,) = struct.unpack_from("<L", part10_file, 132 + 8)
    return part10_file[132 + 12 + meta_length :]


def as_sent(ds: Dataset) -> bytes:
    """The data set as pynetdicom puts it on the wire, in its transfer syntax."""
    syntax = ds.file_meta.TransferSyntaxUID
    data = encode(ds, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
    assert data is not None
    return data


NAMES = [*REAL_FILES, "exam summary (secondary capture)", "dose report (RDSR)"]
NAMES += ["presentation state", "key object selection", "this node's result SR"]


@pytest.mark.parametrize("name", NAMES)
def test_a_forwarded_object_is_kept_and_leaves_a_triaged_study_alone(
    receiver: Receiver, images: list[Dataset], forwarded: dict[str, Dataset], name: str
) -> None:
    if name in REAL_FILES and not SHARED_DATA.is_dir():
        pytest.skip(f"real DICOM data not found at {SHARED_DATA}")
    study = str(images[0].StudyInstanceUID)
    assert store(receiver.port, images) == [SUCCESS] * len(images)
    triage_once(receiver, study)
    before = last_instance_at(receiver, study)
    ds = forwarded[name]

    assert store(receiver.port, [ds]) == [SUCCESS]

    assert data_set_bytes(stored_bytes(receiver, ds)) == as_sent(ds)  # byte for byte
    kept = stored(receiver, ds)
    assert kept.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert kept.SOPClassUID == ds.SOPClassUID
    assert receiver.catalogue.has_instance(str(ds.SOPInstanceUID))
    series = {s.series_instance_uid: s for s in receiver.catalogue.series_of(study)}
    assert series[str(ds.SeriesInstanceUID)].modality == ds.Modality
    assert receiver.catalogue.study_state(study) == ("triaged", 1)
    assert last_instance_at(receiver, study) == before
    assert receiver.catalogue.quiet_studies(0.0) == []  # nothing to triage again
    assert receiver.stats.stored == len(images) + 1


def test_the_whole_forward_twice_stores_each_object_once(
    receiver: Receiver, images: list[Dataset], forwarded: dict[str, Dataset]
) -> None:
    study = str(images[0].StudyInstanceUID)
    everything = [*images, *forwarded.values()]
    assert store(receiver.port, everything) == [SUCCESS] * len(everything)
    triage_once(receiver, study)
    assert store(receiver.port, everything) == [SUCCESS] * len(everything)
    assert receiver.stats.duplicates == len(everything)
    assert receiver.catalogue.counts()["instances"] == len(everything)
    assert receiver.catalogue.study_state(study) == ("triaged", 1)


def test_a_late_image_still_reopens_the_study(
    receiver: Receiver, images: list[Dataset], forwarded: dict[str, Dataset]
) -> None:
    study = str(images[0].StudyInstanceUID)
    assert store(receiver.port, images[:3]) == [SUCCESS] * 3
    triage_once(receiver, study)
    assert store(receiver.port, [forwarded["dose report (RDSR)"]]) == [SUCCESS]
    assert receiver.catalogue.study_state(study) == ("triaged", 1)
    assert store(receiver.port, images[3:]) == [SUCCESS]
    assert receiver.catalogue.study_state(study) == ("receiving", 2)


def test_forwarded_objects_while_receiving_extend_the_quiet_period(
    receiver: Receiver, images: list[Dataset], forwarded: dict[str, Dataset]
) -> None:
    study = str(images[0].StudyInstanceUID)
    assert store(receiver.port, images) == [SUCCESS] * len(images)
    after_images = last_instance_at(receiver, study)
    assert store(receiver.port, [forwarded["presentation state"]]) == [SUCCESS]
    assert last_instance_at(receiver, study) > after_images
    assert receiver.catalogue.study_state(study) == ("receiving", 1)


def test_an_object_arriving_during_the_triage_run_does_not_void_it(
    receiver: Receiver, images: list[Dataset], forwarded: dict[str, Dataset]
) -> None:
    study = str(images[0].StudyInstanceUID)
    assert store(receiver.port, images) == [SUCCESS] * len(images)
    generation = receiver.catalogue.claim_for_triage(study)
    assert generation == 1
    assert store(receiver.port, [forwarded["key object selection"]]) == [SUCCESS]
    assert receiver.catalogue.study_state(study) == ("triaging", 1)
    assert receiver.catalogue.finish_triage(study, generation, [], Priority.ROUTINE, None)
    assert receiver.catalogue.study_state(study) == ("triaged", 1)


def test_a_study_first_seen_through_an_sr_starts_receiving(
    receiver: Receiver, forwarded: dict[str, Dataset]
) -> None:
    sr = forwarded["dose report (RDSR)"]
    assert store(receiver.port, [sr]) == [SUCCESS]
    assert receiver.catalogue.study_state(str(sr.StudyInstanceUID)) == ("receiving", 1)


def test_reconciling_a_stored_sr_leaves_the_triaged_study_alone(
    receiver: Receiver, images: list[Dataset], forwarded: dict[str, Dataset]
) -> None:
    study = str(images[0].StudyInstanceUID)
    assert store(receiver.port, images) == [SUCCESS] * len(images)
    triage_once(receiver, study)
    sr = forwarded["this node's result SR"]
    record = describe_instance(sr, str(sr.file_meta.TransferSyntaxUID), 0)
    assert record.triage_input is False
    receiver.store.put(record.key, part10(sr))  # stored, then the catalogue write was lost
    assert receiver.reconcile() == 1
    assert receiver.catalogue.study_state(study) == ("triaged", 1)


# -- transfer syntaxes -------------------------------------------------------------------------


def test_documents_take_uncompressed_and_deflate_images_also_compressed(
    receiver: Receiver, forwarded: dict[str, Dataset]
) -> None:
    contexts = [
        (ComprehensiveSRStorage, JPEGBaseline8Bit),  # a compressed syntax for an SR
        (ComprehensiveSRStorage, DeflatedExplicitVRLittleEndian),
        (SecondaryCaptureImageStorage, JPEGBaseline8Bit),
    ]
    assoc = associate(receiver.port, contexts)
    assert assoc.is_established
    try:
        accepted = {
            (str(c.abstract_syntax), str(c.transfer_syntax[0])) for c in assoc.accepted_contexts
        }
        assert accepted == set(contexts[1:]) | {("1.2.840.10008.1.1", "1.2.840.10008.1.2")}
        sr = copy.deepcopy(forwarded["dose report (RDSR)"])
        sr.SOPClassUID = sr.file_meta.MediaStorageSOPClassUID = ComprehensiveSRStorage
        sr.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        assert int(assoc.send_c_store(sr).Status) == SUCCESS
    finally:
        assoc.release()
    assert data_set_bytes(stored_bytes(receiver, sr)) == as_sent(sr)  # still deflated
    kept = stored(receiver, sr)
    assert kept.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert kept.ContentSequence == sr.ContentSequence


# -- what is accepted: the setting -----------------------------------------------------------


def private_object(images: list[Dataset]) -> Dataset:
    ds = copy.deepcopy(images[0])
    del ds.PixelData
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SIEMENS_CSA_NON_IMAGE
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5.6.7.1"
    ds.SeriesInstanceUID = "1.2.3.4.5.6.7"
    return ds


def test_with_images_an_sr_is_refused_at_negotiation_and_an_sc_taken(
    tmp_path: Path,
    stopper: list[threading.Thread],
    images: list[Dataset],
    forwarded: dict[str, Dataset],
) -> None:
    rx = open_receiver(tmp_path, accepted_classes(["images"]))
    try:
        sc, sr = forwarded["exam summary (secondary capture)"], forwarded["dose report (RDSR)"]
        assoc = associate(
            rx.port,
            [(CTImageStorage, "1.2.840.10008.1.2.1")]
            + [(str(ds.SOPClassUID), "1.2.840.10008.1.2.1") for ds in (sc, sr)],
        )
        assert assoc.is_established
        try:
            accepted = {str(c.abstract_syntax) for c in assoc.accepted_contexts}
            assert {CTImageStorage, SecondaryCaptureImageStorage} <= accepted
            assert str(sr.SOPClassUID) not in accepted
            with pytest.raises(ValueError, match="presentation context"):
                assoc.send_c_store(sr)
            assert int(assoc.send_c_store(sc).Status) == SUCCESS
        finally:
            assoc.release()
        assert rx.accept(part10(sr)) == SOP_CLASS_NOT_SUPPORTED  # WADO-RS: not taken either
        assert rx.catalogue.counts()["instances"] == 1
        assert list(rx.store.keys("quarantine/")) == []
    finally:
        stop_later(stopper, rx)


def test_a_private_class_is_refused_unless_listed(
    tmp_path: Path, stopper: list[threading.Thread], images: list[Dataset]
) -> None:
    ds = private_object(images)
    default = open_receiver(tmp_path / "default")
    try:
        assoc = associate(default.port, [(SIEMENS_CSA_NON_IMAGE, "1.2.840.10008.1.2.1")])
        try:
            assert SIEMENS_CSA_NON_IMAGE not in {
                str(c.abstract_syntax) for c in assoc.accepted_contexts
            }
        finally:
            assoc.release()
        assert default.accept(part10(ds)) == SOP_CLASS_NOT_SUPPORTED
    finally:
        stop_later(stopper, default)
    settings = load_settings(
        {
            "TRIAGE_HOME": str(tmp_path / "home"),
            "TRIAGE_ACCEPT_SOP_CLASSES": f"storage, {SIEMENS_CSA_NON_IMAGE}",
        }
    )
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'listed.db'}")
    listed = Receiver.from_settings(LocalStore(tmp_path / "listed"), catalogue, settings)
    listed.start("127.0.0.1", 0)
    try:
        assert store(listed.port, [ds]) == [SUCCESS]
        assert listed.accept(part10(ds)) == SUCCESS  # the same instance again: stored once
        assert listed.catalogue.counts()["instances"] == 1
    finally:
        stop_later(stopper, listed)


def test_the_accepted_classes_follow_the_setting(tmp_path: Path) -> None:
    def accepted(value: str) -> tuple[str, ...]:
        env = {"TRIAGE_HOME": str(tmp_path), "TRIAGE_ACCEPT_SOP_CLASSES": value}
        return accepted_classes(load_settings(env).accept_sop_classes)

    assert accepted("storage") == STORAGE_CLASSES
    assert load_settings({"TRIAGE_HOME": str(tmp_path)}).accept_sop_classes == ("storage",)
    assert accepted("images") == IMAGE_CLASSES
    assert accepted("Images, BasicTextSRStorage") == (
        *IMAGE_CLASSES,
        "1.2.840.10008.5.1.4.1.1.88.11",
    )
    explicit = accepted("CTImageStorage,1.2.840.10008.5.1.4.1.1.7, ctimagestorage")
    assert explicit == (CTImageStorage, SecondaryCaptureImageStorage)


def test_image_classes_are_those_with_pixels() -> None:
    images = set(IMAGE_CLASSES)
    assert set(ANALYSED_CLASSES) <= images
    for uid in (
        SecondaryCaptureImageStorage,
        "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound
        "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
        "1.2.840.10008.5.1.4.1.1.481.2",  # RT Dose
        "1.2.840.10008.5.1.4.1.1.128",  # PET
    ):
        assert uid in images, uid
    for uid in (
        ComprehensiveSRStorage,
        "1.2.840.10008.5.1.4.1.1.88.67",  # X-Ray Radiation Dose SR
        "1.2.840.10008.5.1.4.1.1.88.59",  # Key Object Selection
        "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State
        "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
        "1.2.840.10008.5.1.4.1.1.481.5",  # RT Plan
    ):
        assert uid not in images, uid


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("", "give storage"),
        (" , ", "give storage"),
        ("everything", "'everything' is neither storage, images"),
        ("SecondaryCapture", "did you mean SecondaryCaptureImageStorage?"),
        ("imgaes", "did you mean images?"),
        ("1.2.840.10008.1.1", "is the UID of Verification SOP Class, not a storage SOP class"),
        ("1.2.840.10008.1.2.4.50", "JPEG Baseline"),
        ("1.2.3.04", "'1.2.3.04' is neither"),  # not a valid UID (leading zero)
        ("1." + "2" * 70, "is neither"),  # longer than 64 characters
    ],
)
def test_a_wrong_setting_is_refused_naming_the_variable(
    tmp_path: Path, value: str, says: str
) -> None:
    from triage.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_settings({"TRIAGE_HOME": str(tmp_path), "TRIAGE_ACCEPT_SOP_CLASSES": value})
    assert f"TRIAGE_ACCEPT_SOP_CLASSES={value!r}" in str(info.value)
    assert says in str(info.value)


def test_the_setting_comes_from_the_config_file_and_shows_in_triage_config(
    tmp_path: Path,
) -> None:
    config = tmp_path / "triage.toml"
    config.write_text('accept_sop_classes = ["images", "KeyObjectSelectionDocumentStorage"]\n')
    env = {"TRIAGE_HOME": str(tmp_path), "TRIAGE_CONFIG": str(config), "PATH": ""}
    assert load_settings(env).accept_sop_classes == ("images", "1.2.840.10008.5.1.4.1.1.88.59")
    out = subprocess.run(
        [sys.executable, "-m", "triage.app.cli", "config"],
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": ":".join(sys.path)},
        timeout=120,
        check=True,
    )
    [line] = [x for x in out.stdout.splitlines() if x.startswith("accept_sop_classes")]
    assert line.split() == ["accept_sop_classes", "images,1.2.840.10008.5.1.4.1.1.88.59"]


def test_a_setting_without_ct_or_mr_images_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("WARNING", logger="triage.receive.sop_classes"):
        assert accepted_classes([SecondaryCaptureImageStorage]) == (SecondaryCaptureImageStorage,)
    assert "nothing received will be triaged" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="triage.receive.sop_classes"):
        accepted_classes(["images"])
    assert caplog.text == ""


def test_c_get_proposes_what_the_receiver_accepts_within_one_association() -> None:
    contexts = retrieve_contexts(STORAGE_CLASSES)
    assert len(contexts) == 127  # and one context for C-GET itself
    proposed = [uid for uid, _ in contexts]
    assert proposed[: len(ANALYSED_CLASSES)] == list(ANALYSED_CLASSES)
    for uid in (
        SecondaryCaptureImageStorage,
        ComprehensiveSRStorage,
        "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR: this node's own
        "1.2.840.10008.5.1.4.1.1.88.67",  # X-Ray Radiation Dose SR
        "1.2.840.10008.5.1.4.1.1.88.59",  # Key Object Selection
        "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State
    ):
        assert uid in proposed, uid
    assert dict(contexts)[ComprehensiveSRStorage] == transfer_syntaxes_for(ComprehensiveSRStorage)
    images_only = retrieve_contexts(accepted_classes(["images"]))
    assert {uid for uid, _ in images_only} == set(IMAGE_CLASSES)
