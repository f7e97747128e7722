"""The catalogue: instances, study states and generations, results, the outbox, the worklist."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from pydicom.sr.codedict import codes

from triage.catalogue import (
    DEAD,
    DELIVERED,
    NOT_ANALYSED,
    PENDING,
    RECEIVING,
    TRIAGED,
    TRIAGING,
    Catalogue,
    InstanceRecord,
    utcnow,
)
from triage.errors import StorageError
from triage.results import ModelResult, Priority

ICH = codes.SCT.IntracranialHemorrhage


def rec(
    study: str = "1.2.3",
    series: str | None = None,
    sop: str = "1.2.3.1.1",
    **extra: str,
) -> InstanceRecord:
    series = series or f"{study}.1"
    values = {
        "modality": "CT",
        "body_part": "HEAD",
        "series_description": "Head 5mm",
        "series_number": "2",
        "image_type": "ORIGINAL\\PRIMARY\\AXIAL",
        "accession_number": "ACC1",
        "patient_id": "PID1",
        "study_description": "CT head",
        "study_date": "20240517",
        **extra,
    }
    return InstanceRecord(
        study_instance_uid=study,
        series_instance_uid=series,
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        key=f"raw/{study}/{series}/{sop}.dcm",
        size=1234,
        **values,
    )


def result(
    priority: Priority = Priority.URGENT,
    probability: float = 0.9,
    name: str = "ich",
    version: str = "1",
    series: str = "1.2.3.1",
) -> ModelResult:
    return ModelResult(name, version, ICH, probability, 0.5, priority, series)


def add_study(cat: Catalogue, study: str, instances: int = 1) -> None:
    for n in range(instances):
        assert cat.record_instance(rec(study, sop=f"{study}.9.{n}"))


def claimed(cat: Catalogue, study: str) -> int:
    generation = cat.claim_for_triage(study)
    assert generation is not None
    return generation


# -- receiving --------------------------------------------------------------------------------


def test_record_instance_creates_study_series_and_instance(cat: Catalogue) -> None:
    assert not cat.has_instance("1.2.3.1.1")
    assert cat.record_instance(rec()) is True
    assert cat.has_instance("1.2.3.1.1")
    assert cat.study_state("1.2.3") == (RECEIVING, 1)
    [series] = cat.series_of("1.2.3")
    assert series.series_instance_uid == "1.2.3.1"
    assert series.modality == "CT"
    assert series.body_part == "HEAD"
    assert series.series_description == "Head 5mm"
    assert series.series_number == "2"
    assert series.image_types == ("ORIGINAL\\PRIMARY\\AXIAL",)
    assert series.keys == ("raw/1.2.3/1.2.3.1/1.2.3.1.1.dcm",)
    assert cat.counts() == {"instances": 1, RECEIVING: 1}
    [row] = cat.worklist()
    assert row.accession_number == "ACC1"
    assert row.study_description == "CT head"
    assert row.modality == "CT"
    assert row.instances == 1


def test_same_sop_twice_is_recorded_once(cat: Catalogue) -> None:
    assert cat.record_instance(rec()) is True
    assert cat.record_instance(rec()) is False
    assert cat.counts()["instances"] == 1
    assert cat.series_of("1.2.3")[0].keys == ("raw/1.2.3/1.2.3.1/1.2.3.1.1.dcm",)


def test_instances_group_into_series_and_studies(cat: Catalogue) -> None:
    for n in range(3):
        cat.record_instance(rec("1.2.3", "1.2.3.1", f"1.2.3.1.{n}"))
    cat.record_instance(rec("1.2.3", "1.2.3.2", "1.2.3.2.1", image_type="ORIGINAL\\LOCALIZER"))
    cat.record_instance(rec("1.2.4", "1.2.4.1", "1.2.4.1.1", modality="MR"))
    by_uid = {s.series_instance_uid: s for s in cat.series_of("1.2.3")}
    assert set(by_uid) == {"1.2.3.1", "1.2.3.2"}
    assert len(by_uid["1.2.3.1"].keys) == 3
    assert by_uid["1.2.3.2"].image_types == ("ORIGINAL\\LOCALIZER",)
    assert cat.series_of("1.2.4")[0].modality == "MR"
    assert cat.series_of("9.9.9") == []
    assert cat.counts() == {"instances": 5, RECEIVING: 2}
    assert {r.study_instance_uid: r.instances for r in cat.worklist()} == {"1.2.3": 4, "1.2.4": 1}


def test_catalogue_survives_reopening(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    first = Catalogue(url)
    first.record_instance(rec())
    first.close()
    second = Catalogue(url)
    try:
        assert second.has_instance("1.2.3.1.1")
        assert second.record_instance(rec()) is False
    finally:
        second.close()


def test_unusable_database_url_raises_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="cannot open the catalogue database"):
        Catalogue(f"sqlite:///{blocker / 'sub' / 'c.db'}")


def test_concurrent_record_instance_loses_nothing(cat: Catalogue) -> None:
    """4 threads x 50 instances of the same study (and shared series): all 200 recorded."""
    errors: list[BaseException] = []
    outcomes: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def work(thread: int) -> None:
        start.wait()
        try:
            for n in range(50):
                series = f"1.2.3.{n % 3}"
                ok = cat.record_instance(rec("1.2.3", series, f"1.2.3.{thread}.{n}"))
                with lock:
                    outcomes.append(ok)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert outcomes.count(True) == 200
    assert cat.counts()["instances"] == 200
    assert sum(len(s.keys) for s in cat.series_of("1.2.3")) == 200
    assert len(cat.series_of("1.2.3")) == 3


def test_concurrent_first_instances_of_new_studies_lose_nothing(cat: Catalogue) -> None:
    """Many threads each opening the same new studies at the same moment."""
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def work(thread: int) -> None:
        start.wait()
        try:
            for study in range(20):
                assert cat.record_instance(rec(f"2.{study}", f"2.{study}.1", f"2.{study}.{thread}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert cat.counts() == {"instances": 80, RECEIVING: 20}


# -- completion and triage --------------------------------------------------------------------


def test_quiet_studies_respects_the_quiet_period(cat: Catalogue) -> None:
    add_study(cat, "1.1")
    now = utcnow()
    assert cat.quiet_studies(30, now=now) == []
    assert cat.quiet_studies(30, now=now + timedelta(seconds=29)) == []
    assert cat.quiet_studies(30, now=now + timedelta(seconds=31)) == ["1.1"]


def test_quiet_studies_lists_oldest_first_and_only_receiving(cat: Catalogue) -> None:
    add_study(cat, "1.1")
    add_study(cat, "1.2")
    add_study(cat, "1.3")
    claimed(cat, "1.2")
    later = utcnow() + timedelta(seconds=60)
    assert cat.quiet_studies(5, now=later) == ["1.1", "1.3"]
    cat.record_instance(rec("1.1", sop="1.1.late"))  # 1.1 is now the most recent
    assert cat.quiet_studies(5, now=utcnow() + timedelta(seconds=60)) == ["1.3", "1.1"]


def test_claim_returns_the_generation_once(cat: Catalogue) -> None:
    add_study(cat, "1.1")
    assert cat.claim_for_triage("1.1") == 1
    assert cat.study_state("1.1") == (TRIAGING, 1)
    assert cat.claim_for_triage("1.1") is None
    assert cat.claim_for_triage("no.such.study") is None


def test_claim_with_quiet_period_refuses_a_study_still_receiving(cat: Catalogue) -> None:
    add_study(cat, "1.1")
    assert cat.claim_for_triage("1.1", quiet_seconds=3600) is None
    assert cat.study_state("1.1") == (RECEIVING, 1)
    assert cat.claim_for_triage("1.1", quiet_seconds=0) == 1


def test_claim_with_quiet_period_refuses_a_triaged_study(cat: Catalogue) -> None:
    add_study(cat, "1.1")
    g = claimed(cat, "1.1")
    assert cat.finish_triage("1.1", g, [], Priority.ROUTINE, None)
    assert cat.claim_for_triage("1.1", quiet_seconds=0) is None


def test_concurrent_claims_give_the_study_to_one_claimant(cat: Catalogue) -> None:
    add_study(cat, "1.1")
    got: list[int | None] = []
    start = threading.Barrier(6)

    def claim() -> None:
        start.wait()
        got.append(cat.claim_for_triage("1.1"))

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(got, key=lambda g: g is None) == [1, None, None, None, None, None]


def test_finish_triage_records_state_priority_and_results(cat: Catalogue) -> None:
    add_study(cat, "1.1")
    g = claimed(cat, "1.1")
    res = result(series="1.1.1")
    ok = cat.finish_triage("1.1", g, [res], Priority.URGENT, None, {"infer_s": 1.5})
    assert ok is True
    assert cat.study_state("1.1") == (TRIAGED, 1)
    [row] = cat.worklist()
    assert row.state == TRIAGED
    assert row.priority == "urgent"
    assert row.reason is None
    assert row.triaged_at is not None
    [finding] = row.findings
    assert finding.model_name == "ich"
    assert finding.model_version == "1"
    assert finding.code == f"SCT:{ICH.value}"
    assert finding.probability == pytest.approx(0.9)
    assert finding.threshold == pytest.approx(0.5)
    assert finding.priority == "urgent"
    assert row.top_finding == finding
    assert cat.study_timings() == {"1.1": {"infer_s": 1.5}}
    cat.add_timings("1.1", {"deliver_s": 0.25})
    assert cat.study_timings() == {"1.1": {"deliver_s": 0.25, "infer_s": 1.5}}


def test_not_analysed_keeps_its_reason(cat: Catalogue) -> None:
    add_study(cat, "1.1")
    g = claimed(cat, "1.1")
    assert cat.finish_triage("1.1", g, [], Priority.NOT_ANALYSED, "no series matches")
    assert cat.study_state("1.1") == (NOT_ANALYSED, 1)
    [row] = cat.worklist()
    assert row.state == NOT_ANALYSED
    assert row.priority == "not analysed"
    assert row.reason == "no series matches"
    assert row.findings == ()
    assert cat.counts() == {"instances": 1, NOT_ANALYSED: 1}


def test_rerun_replaces_results_instead_of_adding(cat: Catalogue) -> None:
    add_study(cat, "1.1")
    g = claimed(cat, "1.1")
    cat.finish_triage("1.1", g, [result(Priority.URGENT, 0.9)], Priority.URGENT, None)
    assert cat.reopen("1.1") is True
    assert cat.study_state("1.1") == (RECEIVING, 2)
    g2 = claimed(cat, "1.1")
    assert g2 == 2
    assert cat.finish_triage("1.1", g2, [result(Priority.ROUTINE, 0.2)], Priority.ROUTINE, None)
    [row] = cat.worklist()
    assert row.priority == "routine"
    assert len(row.findings) == 1
    assert row.findings[0].probability == pytest.approx(0.2)
    # another model version is a separate result
    g3 = cat.reopen("1.1") and claimed(cat, "1.1")
    cat.finish_triage(
        "1.1", g3, [result(Priority.ROUTINE, 0.3, version="2")], Priority.ROUTINE, None
    )
    assert sorted(f.model_version for f in cat.worklist()[0].findings) == ["1", "2"]


def test_reopen_unknown_study_is_false(cat: Catalogue) -> None:
    assert cat.reopen("no.such") is False


def test_late_instance_during_triage_bumps_the_generation(cat: Catalogue) -> None:
    add_study(cat, "1.1")
    g = claimed(cat, "1.1")
    assert cat.record_instance(rec("1.1", sop="1.1.late")) is True
    assert cat.study_state("1.1") == (RECEIVING, 2)
    assert cat.finish_triage("1.1", g, [result()], Priority.URGENT, None) is False
    assert cat.study_state("1.1") == (RECEIVING, 2)
    [row] = cat.worklist()
    assert row.priority is None
    assert row.instances == 2
    # and it is triaged again, with the new generation
    assert cat.claim_for_triage("1.1") == 2
    assert cat.finish_triage("1.1", 2, [], Priority.ROUTINE, None) is True
    assert cat.study_state("1.1") == (TRIAGED, 2)


def test_a_batch_of_instances_is_recorded_as_one_after_the_other(cat: Catalogue) -> None:
    """record_instances: one transaction, the same outcome as record_instance in order."""
    add_study(cat, "1.1")
    cat.finish_triage("1.1", claimed(cat, "1.1"), [], Priority.ROUTINE, None)
    batch = [
        rec("1.1", sop="1.1.late"),
        rec("1.1", sop="1.1.late"),  # the same instance twice: stored once
        rec("1.4", sop="1.4.1"),
        rec("1.4", sop="1.4.2"),
        rec("1.1", sop="1.1.9.0"),  # catalogued before
        rec("1.1", sop="1.1.late2"),
    ]
    assert cat.record_instances(batch) == [True, False, True, True, False, True]
    assert cat.study_state("1.1") == (RECEIVING, 2)  # re-opened once, not once per image
    assert cat.study_state("1.4") == (RECEIVING, 1)
    assert cat.counts() == {"instances": 5, RECEIVING: 2}
    assert cat.record_instances([]) == []


def test_late_instance_after_triage_reopens_the_study(cat: Catalogue) -> None:
    add_study(cat, "1.1")
    g = claimed(cat, "1.1")
    cat.finish_triage("1.1", g, [], Priority.ROUTINE, None)
    cat.record_instance(rec("1.1", sop="1.1.late"))
    assert cat.study_state("1.1") == (RECEIVING, 2)


def test_stale_run_does_not_overwrite_the_newer_runs_results(cat: Catalogue) -> None:
    """An older generation finishing after a newer one must not change what the newer wrote."""
    add_study(cat, "1.1")
    old = claimed(cat, "1.1")
    cat.record_instance(rec("1.1", sop="1.1.late"))
    new = claimed(cat, "1.1")
    assert new == old + 1
    assert cat.finish_triage("1.1", new, [result(Priority.ROUTINE, 0.1)], Priority.ROUTINE, None)
    assert cat.finish_triage(
        "1.1", old, [result(Priority.URGENT, 0.99)], Priority.URGENT, None
    ) is (False)
    [row] = cat.worklist()
    assert row.priority == "routine"
    assert [f.probability for f in row.findings] == [pytest.approx(0.1)]
    assert [f.priority for f in row.findings] == ["routine"]


def test_finish_triage_of_unknown_study_is_false(cat: Catalogue) -> None:
    assert cat.finish_triage("no.such", 1, [result()], Priority.URGENT, None) is False


# -- outbox -----------------------------------------------------------------------------------


def test_outbox_enqueue_due_and_delivered(cat: Catalogue) -> None:
    add_study(cat, "1.1")
    cat.enqueue_delivery("1.1", "5.5.5", "results/1.1/5.5.5.dcm", "PACS@127.0.0.1:104")
    [row] = cat.due_deliveries()
    assert row.study_instance_uid == "1.1"
    assert row.sop_instance_uid == "5.5.5"
    assert row.key == "results/1.1/5.5.5.dcm"
    assert row.destination == "PACS@127.0.0.1:104"
    assert row.state == PENDING
    assert row.attempts == 0
    assert row.last_error is None
    cat.mark_delivered(row.id)
    assert cat.due_deliveries() == []
    [done] = cat.deliveries()
    assert done.state == DELIVERED
    assert done.attempts == 1
    assert cat.deliveries([PENDING]) == []
    assert [d.id for d in cat.deliveries([DELIVERED])] == [row.id]


def test_outbox_failed_attempt_waits_until_next_attempt(cat: Catalogue) -> None:
    add_study(cat, "1.1")
    cat.enqueue_delivery("1.1", "5.5.5", "k.dcm", "PACS@127.0.0.1:104")
    [row] = cat.due_deliveries()
    later = utcnow() + timedelta(seconds=60)
    cat.mark_attempt_failed(row.id, "connection refused", later, dead=False)
    assert cat.due_deliveries() == []
    [again] = cat.due_deliveries(now=later + timedelta(seconds=1))
    assert again.attempts == 1
    assert again.last_error == "connection refused"
    assert again.state == PENDING
    assert again.next_attempt_at == later


def test_outbox_dead_items_are_never_due_and_error_is_capped(cat: Catalogue) -> None:
    add_study(cat, "1.1")
    cat.enqueue_delivery("1.1", "5.5.5", "k.dcm", "PACS@127.0.0.1:104")
    [row] = cat.due_deliveries()
    cat.mark_attempt_failed(row.id, "x" * 5000, utcnow(), dead=True)
    assert cat.due_deliveries(now=utcnow() + timedelta(days=365)) == []
    [dead] = cat.deliveries([DEAD])
    assert dead.attempts == 1
    assert len(dead.last_error or "") == 2000


def test_re_enqueue_resets_the_item(cat: Catalogue) -> None:
    add_study(cat, "1.1")
    cat.enqueue_delivery("1.1", "5.5.5", "old.dcm", "PACS@127.0.0.1:104")
    [row] = cat.due_deliveries()
    for _ in range(3):
        cat.mark_attempt_failed(row.id, "refused", utcnow() + timedelta(hours=1), dead=False)
    cat.mark_attempt_failed(row.id, "refused", utcnow() + timedelta(hours=1), dead=True)
    cat.enqueue_delivery("1.1", "5.5.5", "new.dcm", "PACS@127.0.0.1:104")
    [reset] = cat.deliveries()
    assert reset.id == row.id
    assert (reset.state, reset.attempts, reset.last_error, reset.key) == (
        PENDING,
        0,
        None,
        "new.dcm",
    )
    assert [d.id for d in cat.due_deliveries()] == [row.id]


def test_same_sr_to_two_destinations_is_two_items(cat: Catalogue) -> None:
    add_study(cat, "1.1")
    cat.enqueue_delivery("1.1", "5.5.5", "k.dcm", "A@127.0.0.1:104")
    cat.enqueue_delivery("1.1", "5.5.5", "k.dcm", "B@127.0.0.1:104")
    cat.enqueue_delivery("1.1", "5.5.5", "k.dcm", "A@127.0.0.1:104")
    assert sorted(d.destination for d in cat.deliveries()) == [
        "A@127.0.0.1:104",
        "B@127.0.0.1:104",
    ]


def test_due_deliveries_oldest_first_with_limit(cat: Catalogue) -> None:
    add_study(cat, "1.1")
    for n in range(5):
        cat.enqueue_delivery("1.1", f"5.5.{n}", f"{n}.dcm", "PACS@127.0.0.1:104")
    due = cat.due_deliveries(limit=3)
    assert [d.sop_instance_uid for d in due] == ["5.5.0", "5.5.1", "5.5.2"]


def test_enqueue_for_unknown_study_is_refused(cat: Catalogue) -> None:
    with pytest.raises(StorageError, match="not in the catalogue"):
        cat.enqueue_delivery("no.such", "5.5.5", "k.dcm", "PACS@127.0.0.1:104")
    assert cat.deliveries() == []


# -- worklist ---------------------------------------------------------------------------------


def test_worklist_urgent_first_then_arrival_order(cat: Catalogue) -> None:
    """Not analysed and pending studies sit with routine ones, by arrival; never below."""
    order = ["routine-old", "na-old", "urgent-late", "pending", "routine-new", "na-new", "urgent"]
    for n, study in enumerate(order):
        cat.record_instance(rec(f"1.{n}", sop=f"1.{n}.1", study_description=study))
    outcome = {
        "routine-old": Priority.ROUTINE,
        "na-old": Priority.NOT_ANALYSED,
        "urgent-late": Priority.URGENT,
        "routine-new": Priority.ROUTINE,
        "na-new": Priority.NOT_ANALYSED,
        "urgent": Priority.URGENT,
    }
    uid = {study: f"1.{n}" for n, study in enumerate(order)}
    for study in reversed(order):  # triage in the reverse order: it must not matter
        if study in outcome:
            g = claimed(cat, uid[study])
            cat.finish_triage(uid[study], g, [], outcome[study], None)
    rows = cat.worklist()
    assert [r.study_description for r in rows] == [
        "urgent-late",
        "urgent",
        "routine-old",
        "na-old",
        "pending",
        "routine-new",
        "na-new",
    ]
    by_name = {r.study_description: r for r in rows}
    assert by_name["pending"].priority is None
    assert by_name["pending"].state == RECEIVING
    assert by_name["na-old"].rank == by_name["routine-old"].rank == by_name["pending"].rank
    assert by_name["urgent"].rank < by_name["routine-old"].rank


def test_empty_catalogue(cat: Catalogue) -> None:
    assert cat.worklist() == []
    assert cat.counts() == {"instances": 0}
    assert cat.quiet_studies(0) == []
    assert cat.deliveries() == []
    assert cat.study_state("1.1") is None
