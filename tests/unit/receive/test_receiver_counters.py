"""The receiver's Prometheus counters, against a real receiver and real pynetdicom peers: an
instance stored counts as received, the same one again as a duplicate, a malformed one as
rejected with the status it was answered, one that cannot be stored as 0xA700, and an
association for another AE title as an association rejected. The counters are the process's,
shared by every receiver in it: each test reads how much they moved."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE
from support.factories import phantom_ct_series
from support.receivers import open_receiver, stop_later

from triage.dimse import DATASET_DOES_NOT_MATCH, OUT_OF_RESOURCES, SUCCESS
from triage.receive.counters import REGISTRY
from triage.receive.receiver import Receiver
from triage.store import LocalStore


@pytest.fixture
def receiver(tmp_path: Path, stopper: list[threading.Thread]) -> Iterator[Receiver]:
    rx = open_receiver(tmp_path / "node")
    yield rx
    stop_later(stopper, rx)


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def snapshot() -> dict[str, float]:
    return {
        "stored": counted("triage_instances_received_total", outcome="stored"),
        "duplicate": counted("triage_instances_received_total", outcome="duplicate"),
        "0xA900": counted("triage_instances_rejected_total", status="0xA900"),
        "0xA700": counted("triage_instances_rejected_total", status="0xA700"),
        "associations": counted("triage_associations_rejected_total"),
    }


def moved(before: dict[str, float]) -> dict[str, float]:
    after = snapshot()
    return {k: after[k] - before[k] for k in before if after[k] != before[k]}


def instances(seed: int, count: int = 1) -> list[Dataset]:
    return phantom_ct_series("test_counters", seed, (16, 16, count))


def send(port: int, datasets: list[Dataset], called: str = "TRIAGE") -> list[int] | None:
    """C-STORE each data set on one association; None when it was rejected."""
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return None
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def test_stored_and_duplicate_instances_count_as_received(receiver: Receiver) -> None:
    before = snapshot()
    series = instances(1, count=2)
    assert send(receiver.port, series) == [SUCCESS, SUCCESS]
    assert send(receiver.port, series[:1]) == [SUCCESS]  # the sender sends it again
    assert moved(before) == {"stored": 2, "duplicate": 1}


def test_a_malformed_instance_counts_as_rejected_with_its_status(receiver: Receiver) -> None:
    before = snapshot()
    ds = copy.deepcopy(instances(2)[0])
    del ds.StudyInstanceUID
    assert send(receiver.port, [ds]) == [DATASET_DOES_NOT_MATCH]
    assert moved(before) == {"0xA900": 1}


def test_an_instance_that_cannot_be_stored_counts_as_rejected_a700(
    receiver: Receiver, tmp_path: Path
) -> None:
    good = receiver.store
    broken_root = tmp_path / "broken"
    receiver.store = LocalStore(broken_root)
    broken_root.rmdir()
    broken_root.write_bytes(b"the store's folder is now a file")
    before = snapshot()
    try:
        assert send(receiver.port, instances(3)) == [OUT_OF_RESOURCES]
    finally:
        receiver.store = good
    assert moved(before) == {"0xA700": 1}


def test_an_association_for_another_ae_title_counts_as_rejected(receiver: Receiver) -> None:
    before = snapshot()
    assert send(receiver.port, instances(4), called="NOT_TRIAGE") is None
    assert moved(before) == {"associations": 1}
