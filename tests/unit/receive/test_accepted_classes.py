"""What the receiver accepts (TRIAGE_ACCEPT_SOP_CLASSES), with which transfer syntaxes.

Every standard storage class by default; ``images`` or a list of keywords and UIDs narrows or
widens it. What is left out is refused at presentation-context negotiation (C-STORE) or answered
0x0122 (WADO-RS), neither stored nor quarantined. A wrong value stops start-up naming the
variable. C-GET proposes what the receiver accepts, within one association's 128 contexts.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    ComprehensiveSRStorage,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
)
from support.factories import phantom_ct_series
from support.forwarded import generated_objects, part10
from support.receivers import (
    as_sent,
    data_set_bytes,
    open_receiver,
    stop_later,
    stored,
    stored_bytes,
)
from support.scu import associate, store

from triage.catalogue import Catalogue
from triage.config import load_settings
from triage.dimse import SOP_CLASS_NOT_SUPPORTED, SUCCESS
from triage.errors import ConfigError
from triage.receive.receiver import Receiver
from triage.receive.sop_classes import (
    ANALYSED_CLASSES,
    IMAGE_CLASSES,
    STORAGE_CLASSES,
    accepted_classes,
    retrieve_contexts,
    transfer_syntaxes_for,
)
from triage.store import LocalStore

SIEMENS_CSA_NON_IMAGE = "1.3.12.2.1107.5.9.1"  # a private storage class routers forward


@pytest.fixture(scope="module")
def images() -> list[Dataset]:
    return phantom_ct_series("test_accepted_classes", 0, (32, 32, 4))


@pytest.fixture(scope="module")
def forwarded(images: list[Dataset]) -> dict[str, Dataset]:
    return generated_objects(images)


@pytest.fixture
def receiver(tmp_path: Path, stopper: list[threading.Thread]) -> Iterator[Receiver]:
    rx = open_receiver(tmp_path)
    yield rx
    stop_later(stopper, rx)


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
