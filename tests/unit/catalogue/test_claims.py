"""Claims on studies and outbox rows shared by many workers: one claimant wins, a lease that
expires is taken over on a new generation, the old worker's result and deliveries are fenced."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import timedelta

from pydicom.sr.codedict import codes

from triage.catalogue import RECEIVING, TRIAGED, TRIAGING, Catalogue, InstanceRecord, utcnow
from triage.results import ModelResult, Priority

LATER = timedelta(seconds=120)


def add_study(cat: Catalogue, study: str) -> None:
    cat.record_instance(
        InstanceRecord(
            study_instance_uid=study,
            series_instance_uid=f"{study}.1",
            sop_instance_uid=f"{study}.1.1",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            key=f"raw/{study}/{study}.1/{study}.1.1.dcm",
            size=10,
            modality="CT",
        )
    )


def urgent(study: str) -> ModelResult:
    return ModelResult(
        "ich", "1", codes.SCT.IntracranialHemorrhage, 0.9, 0.5, Priority.URGENT, f"{study}.1"
    )


def worker_of(cat: Catalogue, study: str) -> str | None:
    (row,) = [r for r in cat.worklist() if r.study_instance_uid == study]
    return row.worker


def test_the_next_claim_takes_the_oldest_quiet_study_once(cat: Catalogue) -> None:
    add_study(cat, "1.1")
    add_study(cat, "1.2")
    assert cat.claim_next("w1", quiet_seconds=3600) is None  # not quiet yet
    first = cat.claim_next("w1", quiet_seconds=0)
    second = cat.claim_next("w2", quiet_seconds=0)
    assert first is not None and second is not None
    assert (first.study_instance_uid, first.generation, first.taken_from) == ("1.1", 1, None)
    assert second.study_instance_uid == "1.2"
    assert cat.claim_next("w3", quiet_seconds=0) is None
    assert cat.study_state("1.1") == (TRIAGING, 1)
    assert (worker_of(cat, "1.1"), worker_of(cat, "1.2")) == ("w1", "w2")


def test_concurrent_workers_share_a_burst_each_study_once(cat: Catalogue) -> None:
    for n in range(12):
        add_study(cat, f"2.{n}")
    got: dict[str, list[str]] = {f"w{n}": [] for n in range(4)}
    start = threading.Barrier(4)

    def work(name: str) -> None:
        start.wait()
        while (claim := cat.claim_next(name, quiet_seconds=0)) is not None:
            got[name].append(claim.study_instance_uid)

    threads = [threading.Thread(target=work, args=(name,)) for name in got]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    claimed = [uid for uids in got.values() for uid in uids]
    assert sorted(claimed) == sorted(f"2.{n}" for n in range(12))  # each once, none lost


def test_an_expired_lease_is_taken_over_and_the_old_worker_is_fenced(cat: Catalogue) -> None:
    add_study(cat, "1.1")
    old = cat.claim_next("dead-worker", quiet_seconds=0, lease_seconds=30)
    assert old is not None
    assert cat.claim_next("w2", quiet_seconds=0) is None  # its lease still holds
    new = cat.claim_next("w2", quiet_seconds=0, now=utcnow() + LATER)
    assert new is not None
    assert (new.generation, new.taken_from) == (old.generation + 1, "dead-worker")
    # the old worker wakes up: it can neither renew nor record its result
    assert cat.renew_lease("1.1", old.generation, "dead-worker") is False
    assert cat.finish_triage("1.1", old.generation, [urgent("1.1")], Priority.URGENT, None) is False
    assert cat.renew_lease("1.1", new.generation, "w2") is True
    assert cat.finish_triage("1.1", new.generation, [], Priority.ROUTINE, None) is True
    assert cat.study_state("1.1") == (TRIAGED, new.generation)
    assert worker_of(cat, "1.1") == "w2"


def test_a_renewed_lease_is_not_taken_over(cat: Catalogue) -> None:
    add_study(cat, "1.1")
    claim = cat.claim_next("w1", quiet_seconds=0, lease_seconds=1)
    assert claim is not None
    assert cat.renew_lease("1.1", claim.generation, "w1", lease_seconds=3600)
    assert cat.claim_next("w2", quiet_seconds=0, now=utcnow() + LATER) is None


def test_new_images_end_the_lease_and_the_study_is_claimed_again(cat: Catalogue) -> None:
    add_study(cat, "1.1")
    claim = cat.claim_next("w1", quiet_seconds=0)
    assert claim is not None
    cat.record_instance(
        InstanceRecord(
            study_instance_uid="1.1",
            series_instance_uid="1.1.1",
            sop_instance_uid="1.1.1.2",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            key="raw/1.1/1.1.1/1.1.1.2.dcm",
            size=10,
            modality="CT",
        )
    )
    assert cat.study_state("1.1") == (RECEIVING, claim.generation + 1)
    assert cat.renew_lease("1.1", claim.generation, "w1") is False
    again = cat.claim_next("w2", quiet_seconds=0)
    assert again is not None and again.generation == claim.generation + 1


def test_a_dead_process_of_this_host_loses_its_leases_at_once(cat: Catalogue) -> None:
    import socket

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    ).stdout.strip()
    add_study(cat, "1.1")
    add_study(cat, "1.2")
    assert cat.claim_next(f"{socket.gethostname()}:{gone}", quiet_seconds=0) is not None
    alive = f"{socket.gethostname()}:{__import__('os').getpid()}"
    assert cat.claim_next(alive, quiet_seconds=0) is not None
    cat.enqueue_delivery("1.2", "5.1", "results/5.1.dcm", "PACS@127.0.0.1:104")
    cat.enqueue_delivery("1.2", "5.2", "results/5.2.dcm", "PACS@127.0.0.1:104")
    (sending,) = cat.claim_deliveries(f"{socket.gethostname()}:{gone}", 600, limit=1)
    assert len(cat.claim_deliveries(alive, 600)) == 1  # the other row
    assert cat.release_dead_leases() == ["1.1"]  # not the running process's 1.2
    taken = cat.claim_next("restarted", quiet_seconds=0)
    assert taken is not None and taken.study_instance_uid == "1.1"
    (again,) = cat.claim_deliveries("restarted", 600)
    assert again.id == sending.id


def test_outbox_rows_are_claimed_by_one_worker_until_marked_or_expired(cat: Catalogue) -> None:
    add_study(cat, "1.1")
    add_study(cat, "1.2")
    cat.enqueue_delivery("1.1", "5.1", "results/5.1.dcm", "PACS@127.0.0.1:104")
    cat.enqueue_delivery("1.2", "5.2", "results/5.2.dcm", "PACS@127.0.0.1:104")
    only_12 = cat.claim_deliveries("w1", 30, study_uid="1.2")
    assert [r.sop_instance_uid for r in only_12] == ["5.2"]
    rest = cat.claim_deliveries("w2", 30)
    assert [r.sop_instance_uid for r in rest] == ["5.1"]
    assert cat.claim_deliveries("w3", 30) == []  # both leased
    cat.mark_delivered(rest[0].id)
    late = utcnow() + LATER
    (expired,) = cat.claim_deliveries("w3", 30, now=late)  # w1 died holding 5.2
    assert expired.sop_instance_uid == "5.2"
    assert cat.claim_deliveries("w4", 30, now=late) == []
