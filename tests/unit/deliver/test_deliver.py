"""Delivering SRs from the outbox to a real DICOM peer (the built-in stand-in PACS).

Retries with backoff on a closed port, dead-lettering after ``delivery_max_tries``, an operator's
retry, and exactly-once delivery once the PACS is up.
"""

from __future__ import annotations

import dataclasses
import io
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from support.factories import phantom_ct_series

from triage.catalogue import DEAD, DELIVERED, PENDING, Catalogue, InstanceRecord, utcnow
from triage.config import DicomNode, Settings, load_settings
from triage.deliver.outbox import MAX_BACKOFF_SECONDS, deliver_due, next_attempt, retry_dead
from triage.dimse import is_success, store_datasets
from triage.errors import DeliveryError
from triage.receive.receiver import Receiver
from triage.receive.sop_classes import ANALYSED_CLASSES
from triage.report.sr import build_triage_sr
from triage.report.sr_read import read_triage_sr
from triage.results import ModelResult, Priority
from triage.store import LocalStore
from triage.synthetic.standin_pacs import StandInPacs

BACKOFF = 10.0


def make_study(seed: int) -> list[Dataset]:
    return phantom_ct_series("test_deliver", seed)


class Node:
    """Store, catalogue and settings of one triage node, in a temporary home."""

    def __init__(self, home: Path, **env: str) -> None:
        self.settings: Settings = load_settings(
            environ={
                "TRIAGE_HOME": str(home),
                "TRIAGE_DELIVERY_MAX_TRIES": "3",
                "TRIAGE_DELIVERY_BACKOFF_SECONDS": str(BACKOFF),
                **env,
            }
        )
        self.store = LocalStore(self.settings.store_path)
        self.catalogue = Catalogue(self.settings.database_url)

    def add_sr(self, seed: int, destination: str, probability: float = 0.9) -> tuple[str, str]:
        """Catalogue a small study, write its SR to the store, queue it; (study, SR SOP UID)."""
        images = make_study(seed)
        for ds in images:
            self.catalogue.record_instance(
                InstanceRecord(
                    study_instance_uid=ds.StudyInstanceUID,
                    series_instance_uid=ds.SeriesInstanceUID,
                    sop_instance_uid=ds.SOPInstanceUID,
                    sop_class_uid=ds.SOPClassUID,
                    transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
                    key=f"raw/{ds.SOPInstanceUID}.dcm",
                    size=0,
                    modality="CT",
                )
            )
        result = ModelResult(
            "ich-detector",
            "1.0.0",
            codes.SCT.IntracranialHemorrhage,
            probability,
            0.5,
            Priority.URGENT if probability >= 0.5 else Priority.ROUTINE,
            str(images[0].SeriesInstanceUID),
        )
        sr = build_triage_sr(images, [result], software_version="test")
        buffer = io.BytesIO()
        sr.save_as(buffer, enforce_file_format=True)
        study = str(images[0].StudyInstanceUID)
        key = f"results/{study}/{sr.SOPInstanceUID}.dcm"
        self.store.put(key, buffer.getvalue())
        self.catalogue.enqueue_delivery(study, str(sr.SOPInstanceUID), key, destination)
        return study, str(sr.SOPInstanceUID)

    def deliver(self, *, all_pending: bool = False):  # type: ignore[no-untyped-def]
        """One delivery run; with all_pending, as if every waiting item were due now."""
        only = self.catalogue.deliveries([PENDING]) if all_pending else None
        return deliver_due(self.store, self.catalogue, self.settings, only=only)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path / "home")
    yield n
    n.catalogue.close()


@pytest.fixture
def pacs(tmp_path: Path, stopper: list[threading.Thread]) -> Iterator[StandInPacs]:
    standin = StandInPacs(tmp_path / "pacs")
    standin.start("127.0.0.1", 0)
    yield standin
    stopper.append(threading.Thread(target=standin.stop))
    stopper[-1].start()


def pacs_port(standin: StandInPacs) -> int:
    assert standin._server is not None
    return int(standin._server.server_address[1])


def free_port() -> int:
    """A port with nothing listening on it (closed again at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_sr_is_delivered_and_marked_delivered(node: Node, pacs: StandInPacs) -> None:
    study, sop = node.add_sr(1, f"STANDIN_PACS@127.0.0.1:{pacs_port(pacs)}")
    summary = node.deliver()
    assert (summary.delivered, summary.retrying, summary.dead) == (1, 0, 0)
    [row] = node.catalogue.deliveries()
    assert row.state == DELIVERED
    assert row.attempts == 1
    assert row.last_error is None
    assert node.catalogue.due_deliveries() == []
    assert pacs.received == [f"{study}/{sop}.dcm"]
    received = pydicom.dcmread(io.BytesIO(pacs.store.get(pacs.received[0])))
    assert received.SOPInstanceUID == sop
    assert received.StudyInstanceUID == study
    [finding] = read_triage_sr(received)
    assert finding.priority is Priority.URGENT
    assert finding.probability == pytest.approx(0.9)
    # a second run has nothing to do
    assert node.deliver().delivered == 0
    assert len(pacs.received) == 1


def test_several_srs_go_over_one_run(node: Node, pacs: StandInPacs) -> None:
    destination = f"STANDIN_PACS@127.0.0.1:{pacs_port(pacs)}"
    sent = {node.add_sr(seed, destination, probability=0.1 * seed) for seed in (1, 2, 3)}
    summary = node.deliver()
    assert summary.delivered == 3
    assert sorted(pacs.received) == sorted(f"{study}/{sop}.dcm" for study, sop in sent)
    assert {r.state for r in node.catalogue.deliveries()} == {DELIVERED}


def test_closed_port_fails_with_backoff_then_dead_then_retry_delivers_once(
    node: Node, tmp_path: Path, stopper: list[threading.Thread]
) -> None:
    port = free_port()
    study, sop = node.add_sr(4, f"STANDIN_PACS@127.0.0.1:{port}")

    before = utcnow()
    summary = node.deliver()
    after = utcnow()
    assert (summary.delivered, summary.retrying, summary.dead) == (0, 1, 0)
    [row] = node.catalogue.deliveries()
    assert (row.state, row.attempts) == (PENDING, 1)
    assert f"127.0.0.1:{port}" in (row.last_error or "")
    # first retry after BACKOFF * 2**0 seconds, +-25 % jitter
    assert before + timedelta(seconds=0.75 * BACKOFF) <= row.next_attempt_at
    assert row.next_attempt_at <= after + timedelta(seconds=1.25 * BACKOFF)
    assert node.catalogue.due_deliveries() == []  # not due yet
    first_wait = row.next_attempt_at - before

    before = utcnow()
    assert node.deliver(all_pending=True).retrying == 1
    [row] = node.catalogue.deliveries()
    assert (row.state, row.attempts) == (PENDING, 2)
    # second retry after BACKOFF * 2**1 seconds: the wait has grown
    assert row.next_attempt_at >= before + timedelta(seconds=1.5 * BACKOFF)
    assert row.next_attempt_at - before > first_wait

    summary = node.deliver(all_pending=True)
    assert (summary.delivered, summary.retrying, summary.dead) == (0, 0, 1)
    [row] = node.catalogue.deliveries()
    assert (row.state, row.attempts) == (DEAD, 3)
    assert row.last_error
    assert node.catalogue.due_deliveries(now=utcnow() + timedelta(days=30)) == []
    assert node.deliver(all_pending=True).dead == 0  # dead items are left alone

    # the operator starts the PACS and retries the dead items
    standin = StandInPacs(tmp_path / "pacs")
    standin.start("127.0.0.1", port)
    try:
        assert retry_dead(node.catalogue) == 1
        [row] = node.catalogue.deliveries()
        assert (row.state, row.attempts, row.last_error) == (PENDING, 0, None)
        assert node.deliver().delivered == 1
        assert node.deliver().delivered == 0
        assert retry_dead(node.catalogue) == 0
    finally:
        stopper.append(threading.Thread(target=standin.stop))
        stopper[-1].start()
    assert standin.received == [f"{study}/{sop}.dcm"]
    [row] = node.catalogue.deliveries()
    assert (row.state, row.attempts) == (DELIVERED, 1)


@pytest.fixture
def peer(tmp_path: Path, stopper: list[threading.Thread]) -> Iterator[Receiver]:
    """The triage receiver as a peer: AE title PEER, CT/MR storage only."""
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'peer.db'}")
    store = LocalStore(tmp_path / "peer")
    receiver = Receiver(store, catalogue, "PEER", accepted=ANALYSED_CLASSES)
    receiver.start("127.0.0.1", 0)
    yield receiver
    stopper.append(threading.Thread(target=receiver.stop))
    stopper[-1].start()


def test_destination_that_rejects_the_association(node: Node, peer: Receiver) -> None:
    """A real SCP that does not know the called AE title: the error says what to check."""
    node.add_sr(5, f"SOMEONE_ELSE@127.0.0.1:{peer.port}")
    assert node.deliver().retrying == 1
    [row] = node.catalogue.deliveries()
    assert row.attempts == 1
    assert "rejected the association" in (row.last_error or "")
    assert "TRIAGE" in (row.last_error or "")  # the calling AE title to configure


def test_destination_that_does_not_take_srs(node: Node, peer: Receiver) -> None:
    """A receiver that takes CT/MR only: the SR is refused, not lost."""
    node.add_sr(6, f"PEER@127.0.0.1:{peer.port}")
    assert node.deliver().retrying == 1
    [row] = node.catalogue.deliveries()
    assert (row.state, row.attempts) == (PENDING, 1)
    # it answered: the error names what it refused and whom to configure, not "cannot reach"
    error = row.last_error or ""
    assert "accepted none of the object types offered" in error, error
    assert "Comprehensive 3D SR Storage" in error or "1.2.840.10008.5.1.4.1.1.88" in error, error
    assert "TRIAGE" in error and "cannot reach" not in error, error
    assert list(peer.store.keys("raw/")) == []


def test_sr_missing_from_the_store_is_an_attempt_failure(node: Node, pacs: StandInPacs) -> None:
    study, sop = node.add_sr(7, f"STANDIN_PACS@127.0.0.1:{pacs_port(pacs)}")
    node.store.delete(f"results/{study}/{sop}.dcm")
    assert node.deliver().retrying == 1
    [row] = node.catalogue.deliveries()
    assert "cannot read the SR from the store" in (row.last_error or "")
    assert pacs.received == []


@pytest.mark.parametrize("cut", ["not dicom", "after the file meta"])
def test_corrupt_sr_in_the_store_does_not_block_the_others(
    node: Node, pacs: StandInPacs, cut: str
) -> None:
    """Before the fix, an SR cut after its file meta crashed every delivery run."""
    destination = f"STANDIN_PACS@127.0.0.1:{pacs_port(pacs)}"
    bad_study, bad_sop = node.add_sr(14, destination)
    good = node.add_sr(15, destination)
    key = f"results/{bad_study}/{bad_sop}.dcm"
    data = node.store.get(key)
    if cut == "not dicom":
        node.store.put(key, b"garbage" * 10)
    else:
        meta_end = 132 + 12 + int.from_bytes(data[140:144], "little")  # group length value
        node.store.put(key, data[:meta_end])
    summary = node.deliver()
    assert (summary.delivered, summary.retrying) == (1, 1)
    assert pacs.received == [f"{good[0]}/{good[1]}.dcm"]
    bad = next(r for r in node.catalogue.deliveries() if r.sop_instance_uid == bad_sop)
    assert (bad.state, bad.attempts) == (PENDING, 1)
    assert "cannot read the SR from the store" in (bad.last_error or "")


def test_bad_destination_is_an_attempt_failure(node: Node) -> None:
    node.add_sr(8, "not a dicom node")
    assert node.deliver().retrying == 1
    [row] = node.catalogue.deliveries()
    assert "is not AE@host:port" in (row.last_error or "")


def test_one_bad_item_does_not_block_the_others(node: Node, pacs: StandInPacs) -> None:
    destination = f"STANDIN_PACS@127.0.0.1:{pacs_port(pacs)}"
    bad_study, bad_sop = node.add_sr(9, destination)
    good = node.add_sr(10, destination)
    node.store.delete(f"results/{bad_study}/{bad_sop}.dcm")
    summary = node.deliver()
    assert (summary.delivered, summary.retrying) == (1, 1)
    assert pacs.received == [f"{good[0]}/{good[1]}.dcm"]
    states = {r.sop_instance_uid: r.state for r in node.catalogue.deliveries()}
    assert states == {bad_sop: PENDING, good[1]: DELIVERED}


def test_dead_after_one_try_when_max_tries_is_1(tmp_path: Path) -> None:
    n = Node(tmp_path / "home", TRIAGE_DELIVERY_MAX_TRIES="1")
    try:
        n.add_sr(11, f"PACS@127.0.0.1:{free_port()}")
        assert n.deliver().dead == 1
        assert [r.state for r in n.catalogue.deliveries()] == [DEAD]
    finally:
        n.catalogue.close()


def test_next_attempt_backoff_grows_and_is_capped() -> None:
    now = utcnow()
    for attempts in range(6):
        delay = (next_attempt(attempts, 2.0, now) - now).total_seconds()
        assert 0.75 * 2.0 * 2**attempts <= delay <= 1.25 * 2.0 * 2**attempts
    capped = (next_attempt(30, 2.0, now) - now).total_seconds()
    assert 0.75 * MAX_BACKOFF_SECONDS <= capped <= 1.25 * MAX_BACKOFF_SECONDS


def test_is_success() -> None:
    assert is_success(0x0000)
    assert all(is_success(s) for s in (0xB000, 0xB006, 0xB007))
    assert not any(is_success(s) for s in (0xA700, 0xA900, 0xC210, 0x0122, 0xFFFF))


def test_store_datasets_nothing_to_send() -> None:
    assert store_datasets(DicomNode("PACS", "127.0.0.1", free_port()), [], "TRIAGE") == []


def test_store_datasets_closed_port_raises_delivery_error() -> None:
    ds = make_study(12)[0]
    node = DicomNode("PACS", "127.0.0.1", free_port())
    with pytest.raises(DeliveryError, match=str(node.port)):
        store_datasets(node, [ds], "TRIAGE", timeout=5)


def test_store_datasets_returns_one_status_per_dataset(pacs: StandInPacs, tmp_path: Path) -> None:
    node = Node(tmp_path / "home")
    try:
        node.add_sr(13, "X@127.0.0.1:1")
        [row] = node.catalogue.deliveries()
        sr = pydicom.dcmread(io.BytesIO(node.store.get(row.key)))
        image = make_study(13)[0]  # CT: the stand-in PACS takes SRs only
        statuses = store_datasets(
            DicomNode("STANDIN_PACS", "127.0.0.1", pacs_port(pacs)), [sr, image], "TRIAGE"
        )
    finally:
        node.catalogue.close()
    assert statuses[0] == 0x0000
    assert statuses[1] == 0xFFFF  # no presentation context for CT: reported, not raised
    assert len(pacs.received) == 1


def test_settings_replace_changes_delivery_limits(node: Node) -> None:
    changed = dataclasses.replace(node.settings, delivery_max_tries=5)
    assert changed.delivery_max_tries == 5
    assert node.settings.delivery_max_tries == 3
