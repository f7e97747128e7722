"""DICOMweb against Orthanc with its real DICOMweb plugin and HTTP basic auth: QIDO-RS finds new
studies, WADO-RS retrieves them through the receiver, STOW-RS delivers the SR from the outbox."""

from __future__ import annotations

import dataclasses
import io
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from support.factories import phantom_ct_series, todays_ct_study
from support.orthanc import DICOMWEB_PLUGIN, ORTHANC, Orthanc, free_port
from support.reporting import record_results

from triage.app.services import Services
from triage.catalogue import DEAD, DELIVERED, PENDING, Catalogue, DeliveryRow
from triage.config import Settings, load_settings
from triage.deliver.outbox import DeliverySummary, deliver_due, retry_dead
from triage.deliver.stow import store_study
from triage.dimse import CANNOT_UNDERSTAND, DATASET_DOES_NOT_MATCH, SOP_CLASS_NOT_SUPPORTED, SUCCESS
from triage.errors import DeliveryError
from triage.receive.dicomweb import DicomwebSource, make_client
from triage.receive.pull import Puller, read_watermark
from triage.receive.receiver import Receiver
from triage.receive.sop_classes import accepted_classes
from triage.report.destinations import sr_destination
from triage.report.sr import build_triage_sr
from triage.report.sr_read import read_triage_sr
from triage.results import ModelResult, Priority
from triage.store import LocalStore

USER, PASSWORD = "triage", "dicomweb-pw-3141"
integration = pytest.mark.integration


def _orthanc(folder: Path, **extra: Any) -> Orthanc:
    if ORTHANC is None:
        pytest.skip("Orthanc is not installed (Debian package orthanc)")
    if DICOMWEB_PLUGIN is None:
        pytest.skip("Orthanc's DICOMweb plugin is not installed (Debian package orthanc-dicomweb)")
    pacs = Orthanc(folder)
    pacs.start(extra=extra, dicomweb=True, users={USER: PASSWORD})
    return pacs


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """Orthanc with DICOMweb at /dicom-web/, basic auth on (user triage)."""
    orthanc = _orthanc(tmp_path_factory.mktemp("dicomweb-pacs"))
    yield orthanc
    orthanc.stop()


def _part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _sr(images: list[Dataset], probability: float = 0.9) -> Dataset:
    result = _result(images, probability)
    return build_triage_sr(images, [result], software_version="test")


def _result(images: list[Dataset], probability: float = 0.9) -> ModelResult:
    return ModelResult(
        "ich-detector",
        "1.0.0",
        codes.SCT.IntracranialHemorrhage,
        probability,
        0.5,
        Priority.URGENT if probability >= 0.5 else Priority.ROUTINE,
        str(images[0].SeriesInstanceUID),
    )


class Node:
    """Store, catalogue, receiver and settings of a triage node that talks DICOMweb."""

    def __init__(self, home: Path, url: str, **env: str) -> None:
        self.settings: Settings = load_settings(
            environ={
                "TRIAGE_HOME": str(home),
                "TRIAGE_PACS_PROTOCOL": "dicomweb",
                "TRIAGE_DICOMWEB_URL": url,
                "TRIAGE_DICOMWEB_USER": USER,
                "TRIAGE_DICOMWEB_PASSWORD": PASSWORD,
                "TRIAGE_DELIVERY_MAX_TRIES": "3",
                "TRIAGE_DELIVERY_BACKOFF_SECONDS": "10",
                **env,
            }
        )
        self.store = LocalStore(self.settings.store_path)
        self.catalogue = Catalogue(self.settings.database_url)
        self.receiver = Receiver(self.store, self.catalogue, self.settings.ae_title)
        self.completed: list[str] = []
        source = DicomwebSource.from_settings(self.settings, self.receiver.accept)
        self.puller = Puller(source, self.store, self.catalogue, on_complete=self.completed.append)

    def add_sr(self, images: list[Dataset]) -> tuple[str, str]:
        """Catalogue the images (through the receiver), write their SR, queue it as report()
        would; returns (study UID, SR SOP Instance UID)."""
        for ds in images:
            assert self.receiver.accept(_part10(ds)) == SUCCESS
        sr = _sr(images)
        study = str(images[0].StudyInstanceUID)
        key = f"results/{study}/{sr.SOPInstanceUID}.dcm"
        self.store.put(key, _part10(sr))
        destination = sr_destination(self.settings)
        assert destination is not None
        self.catalogue.enqueue_delivery(study, str(sr.SOPInstanceUID), key, destination)
        return study, str(sr.SOPInstanceUID)

    def deliver(self, *, all_pending: bool = False) -> DeliverySummary:
        only = self.catalogue.deliveries([PENDING]) if all_pending else None
        return deliver_due(self.store, self.catalogue, self.settings, only=only)

    def row(self) -> DeliveryRow:
        (row,) = self.catalogue.deliveries()
        return row


@pytest.fixture
def node(tmp_path: Path, pacs: Orthanc) -> Iterator[Node]:
    n = Node(tmp_path / "home", pacs.dicomweb_url)
    yield n
    n.catalogue.close()


def _instances_in_orthanc(pacs: Orthanc, study_uid: str) -> dict[str, dict[str, Any]]:
    """SOPInstanceUID -> the instance's tags, as Orthanc's REST API has them."""
    return {
        i["MainDicomTags"]["SOPInstanceUID"]: pacs.get(f"/instances/{i['ID']}/tags?simplify")
        for i in pacs.instances_of_study(study_uid)
    }


# -- pull: QIDO-RS + WADO-RS ---------------------------------------------------------------


@integration
def test_new_studies_are_found_by_qido_and_retrieved_by_wado(pacs: Orthanc, node: Node) -> None:
    first, second = todays_ct_study("dicomweb-1", 5), todays_ct_study("dicomweb-2", 3)
    for study in (first, second):
        pacs.store(study)

    summary = node.puller.poll_once()
    assert summary.failed == {}
    for study in (first, second):
        uid = str(study[0].StudyInstanceUID)
        assert uid in summary.retrieved
        assert node.catalogue.instance_count(uid) == len(study)
        assert uid in node.completed  # NumberOfStudyRelatedInstances from QIDO: no quiet period
    # stored as sent: same pixels, same transfer syntax
    (key,) = [k for k in node.store.keys("raw/") if str(first[0].SOPInstanceUID) in k]
    stored = pydicom.dcmread(io.BytesIO(node.store.get(key)))
    assert stored.PixelData == first[0].PixelData
    assert stored.file_meta.TransferSyntaxUID == first[0].file_meta.TransferSyntaxUID

    again = node.puller.poll_once()  # nothing new: nothing retrieved again
    assert again.retrieved == [] and again.skipped == again.found >= 2

    third = todays_ct_study("dicomweb-3", 4)
    pacs.store(third)  # added between two polls: picked up by the next one
    later = node.puller.poll_once()
    assert later.retrieved == [str(third[0].StudyInstanceUID)]
    assert node.catalogue.instance_count(str(third[0].StudyInstanceUID)) == 4
    assert node.receiver.stats.duplicates == 0  # no study was fetched twice


@integration
def test_only_the_image_series_are_retrieved_and_the_study_completes_at_once(
    pacs: Orthanc, node: Node
) -> None:
    """The PACS holds an SR beside the images (e.g. an earlier result): WADO-RS fetches the CT
    series only, and the series' instance counts from QIDO-RS complete the study at once."""
    images = todays_ct_study("dicomweb-with-sr", 3)
    pacs.store([*images, _sr(images)])
    uid = str(images[0].StudyInstanceUID)
    outcome = node.puller.source.retrieve(uid)
    assert (outcome.completed, outcome.failed, outcome.warning, outcome.expected) == (3, 0, 0, 3)
    assert outcome.ok
    node.puller.poll_once()
    assert uid in node.completed
    assert node.catalogue.instance_count(uid) == 3


@integration
def test_qido_filters_on_modality(pacs: Orthanc, node: Node) -> None:
    mr_only = dataclasses.replace(node.settings, pull_modalities=("MR",))
    source = DicomwebSource.from_settings(mr_only, node.receiver.accept)
    study = todays_ct_study("dicomweb-ct-only", 2)
    pacs.store(study)
    found = {s.study_instance_uid for s in source.find(datetime.now())}
    assert str(study[0].StudyInstanceUID) not in found


@integration
def test_wrong_password_stops_the_poll_with_a_clear_error(pacs: Orthanc, tmp_path: Path) -> None:
    node = Node(tmp_path / "home", pacs.dicomweb_url, TRIAGE_DICOMWEB_PASSWORD="wrong")
    try:
        with pytest.raises(DeliveryError, match="HTTP 401.*TRIAGE_DICOMWEB_USER"):
            node.puller.poll_once()
        assert read_watermark(node.store).since is None  # the next poll looks back as far
    finally:
        node.catalogue.close()


@integration
def test_server_down_is_a_clear_error(tmp_path: Path) -> None:
    node = Node(tmp_path / "home", f"http://127.0.0.1:{free_port()}/dicom-web")
    try:
        with pytest.raises(DeliveryError, match="cannot reach the DICOMweb server"):
            node.puller.poll_once()
    finally:
        node.catalogue.close()


# -- the receiver's accept(): WADO-RS parts stored as C-STORE'd ones -------------------------


def test_accept_stores_catalogues_quarantines_and_skips(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'c.db'}")
    receiver = Receiver(store, catalogue, "TRIAGE")
    try:
        images = phantom_ct_series("accept", shape=(16, 16, 2))
        data = _part10(images[0])
        assert receiver.accept(data) == SUCCESS
        assert receiver.accept(data) == SUCCESS  # the same instance twice is stored once
        assert catalogue.instance_count(str(images[0].StudyInstanceUID)) == 1
        assert (receiver.stats.stored, receiver.stats.duplicates) == (1, 1)

        assert receiver.accept(b"not dicom at all") == CANNOT_UNDERSTAND
        truncated = _part10(images[1])[:-200]  # pixel data cut short
        assert receiver.accept(truncated) == DATASET_DOES_NOT_MATCH
        reasons = [k for k in store.keys("quarantine/") if k.endswith(".reason.txt")]
        assert len(reasons) == 2 and receiver.stats.rejected == 2
        assert any(b"truncated" in store.get(k) for k in reasons)

        # an SR (e.g. this node's own result, back from the PACS) is kept like the images
        assert receiver.accept(_part10(_sr(images))) == SUCCESS
        assert catalogue.instance_count(str(images[0].StudyInstanceUID)) == 2
        # a SOP class TRIAGE_ACCEPT_SOP_CLASSES leaves out is not taken, not quarantined
        images_only = Receiver(store, catalogue, "TRIAGE", accepted=accepted_classes(["images"]))
        assert images_only.accept(_part10(_sr(images, 0.2))) == SOP_CLASS_NOT_SUPPORTED
        assert len(list(store.keys("quarantine/"))) == 4
        assert catalogue.instance_count(str(images[0].StudyInstanceUID)) == 2
    finally:
        catalogue.close()


# -- delivery: STOW-RS ---------------------------------------------------------------------


@integration
def test_sr_is_stored_by_stow_into_the_same_study(pacs: Orthanc, node: Node) -> None:
    images = todays_ct_study("stow-ok", 3)
    pacs.store(images)
    study, sop = node.add_sr(images)
    assert node.row().destination == f"dicomweb:{pacs.dicomweb_url}"

    summary = node.deliver()
    assert (summary.delivered, summary.retrying, summary.dead) == (1, 0, 0)
    row = node.row()
    assert (row.state, row.attempts, row.last_error) == (DELIVERED, 1, None)

    in_pacs = _instances_in_orthanc(pacs, study)
    assert len(in_pacs) == 4  # the three images and the SR, in one study
    sr = in_pacs[sop]
    assert sr["Modality"] == "SR" and sr["StudyInstanceUID"] == study
    assert sr["SeriesInstanceUID"] != str(images[0].SeriesInstanceUID)  # a new series
    assert node.deliver().delivered == 0  # nothing left to do


@integration
def test_wrong_password_fails_each_try_then_dead_then_retry_delivers(
    pacs: Orthanc, tmp_path: Path
) -> None:
    node = Node(tmp_path / "home", pacs.dicomweb_url, TRIAGE_DICOMWEB_PASSWORD="wrong")
    try:
        images = todays_ct_study("stow-auth", 2)
        study, sop = node.add_sr(images)
        assert node.deliver().retrying == 1
        row = node.row()
        assert (row.state, row.attempts) == (PENDING, 1)
        assert "refused the store request (STOW-RS) (HTTP 401)" in (row.last_error or "")
        assert "TRIAGE_DICOMWEB_PASSWORD" in (row.last_error or "")
        assert "wrong" not in (row.last_error or "")  # the password is never repeated
        assert node.deliver(all_pending=True).retrying == 1
        assert node.deliver(all_pending=True).dead == 1
        assert (node.row().state, node.row().attempts) == (DEAD, 3)
        assert pacs.instances_of_study(study) == []

        # the operator fixes the password and retries the dead item
        node.settings = dataclasses.replace(node.settings, dicomweb_password=PASSWORD)
        assert retry_dead(node.catalogue) == 1
        assert node.deliver().delivered == 1
        assert set(_instances_in_orthanc(pacs, study)) == {sop}
    finally:
        node.catalogue.close()


@integration
def test_full_pacs_answers_without_the_sr_and_that_is_a_failed_try(tmp_path: Path) -> None:
    """Orthanc whose storage is full (one patient, protected) answers STOW-RS 200 but lists the
    SR neither as stored nor as failed: not delivered."""
    full = _orthanc(tmp_path / "full-pacs", MaximumPatientCount=1)
    node = Node(tmp_path / "home", full.dicomweb_url)
    try:
        full.store(phantom_ct_series("full-other", seed=1, shape=(16, 16, 2)))
        (patient,) = full.get("/patients")
        protect = full._request(f"/patients/{patient}/protected", b"1", "PUT")
        urllib.request.urlopen(protect, timeout=10).close()

        study, _sop = node.add_sr(phantom_ct_series("full-mine", seed=2, shape=(16, 16, 2)))
        assert node.deliver().retrying == 1
        row = node.row()
        assert (row.state, row.attempts) == (PENDING, 1)
        assert "did not store the SR" in (row.last_error or "")
        assert "neither as stored nor as failed" in (row.last_error or "")
        assert full.instances_of_study(study) == []
    finally:
        node.catalogue.close()
        full.stop()


@integration
def test_failed_sop_sequence_gives_the_failure_reason(pacs: Orthanc, node: Node) -> None:
    """A STOW-RS answer with FailedSOPSequence (Orthanc: 409 for an instance of another study
    than the one posted to) is an error that names the server's FailureReason."""
    sr = _sr(todays_ct_study("stow-409", 2))
    client = make_client(node.settings)
    (error,) = store_study(client, "1.2.826.0.1.3680043.8.498.1", [sr])
    assert error is not None
    assert "did not store the SR (STOW-RS failure reason 0x" in error


@integration
def test_stow_to_a_server_that_is_down_retries(node: Node, tmp_path: Path) -> None:
    down = Node(tmp_path / "down", f"http://127.0.0.1:{free_port()}/dicom-web")
    try:
        down.add_sr(todays_ct_study("stow-down", 2))
        assert down.deliver().retrying == 1
        assert "cannot reach the DICOMweb server" in (down.row().last_error or "")
    finally:
        down.catalogue.close()


# -- end to end: QIDO -> WADO -> report -> outbox -> STOW ------------------------------------


@integration
def test_pulled_study_reported_and_delivered_by_stow(pacs: Orthanc, node: Node) -> None:
    images = todays_ct_study("dicomweb-e2e", 4)
    pacs.store(images)
    uid = str(images[0].StudyInstanceUID)
    assert uid in node.puller.poll_once().retrieved

    svc = Services(node.settings, node.store, node.catalogue)
    sop = record_results(svc, uid, [_result(images, 0.87)])
    (row,) = node.catalogue.deliveries()
    assert (row.sop_instance_uid, row.destination) == (sop, f"dicomweb:{pacs.dicomweb_url}")

    summary = deliver_due(node.store, node.catalogue, node.settings)
    assert summary.delivered == 1
    in_pacs = _instances_in_orthanc(pacs, uid)
    assert sop in in_pacs and len(in_pacs) == 5
    (sr_id,) = [
        i["ID"]
        for i in pacs.instances_of_study(uid)
        if i["MainDicomTags"].get("SOPInstanceUID") == sop
    ]
    (finding,) = read_triage_sr(pydicom.dcmread(io.BytesIO(pacs.instance_file(sr_id))))
    assert finding.priority is Priority.URGENT
    assert finding.probability == pytest.approx(0.87)

    # the next poll sees one more instance in the study (the SR): only the CT series is
    # fetched again, so the node stores nothing new and nothing fails
    stored = node.receiver.stats.stored
    later = node.puller.poll_once()
    assert later.failed == {}
    assert node.receiver.stats.stored == stored
    assert node.catalogue.instance_count(uid) == 4
