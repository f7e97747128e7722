"""The node's /metrics, scraped and parsed as Prometheus would: studies by state, the queue,
the outbox, the latency to the PACS, the stage timings and the models' scores, read from a real
catalogue (the embedded SQLite and a real PostgreSQL) and moving as studies arrive and are
delivered."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydicom.sr.codedict import codes
from sqlalchemy import update
from sqlalchemy.orm import Session

from triage.catalogue import PENDING, Catalogue, Delivery, InstanceRecord, Study, utcnow
from triage.results import ModelResult, Priority, Role
from triage.worklist.metrics import metrics_payload

QUIET = 5.0

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(params=["sqlite", "postgresql"])
def cat(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalogue]:
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres").new_database()
    else:
        url = f"sqlite:///{tmp_path / 'catalogue.db'}"
    catalogue = Catalogue(url)
    yield catalogue
    catalogue.close()


def scrape(cat: Catalogue) -> Samples:
    body, content_type = metrics_payload(cat, quiet_seconds=QUIET)
    assert content_type.startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def bucket(samples: Samples, name: str, le: str, **labels: str) -> float:
    return value(samples, f"{name}_bucket", le=le, **labels)


def add_study(cat: Catalogue, study: str, instances: int = 1) -> None:
    for n in range(instances):
        sop = f"{study}.9.{n}"
        assert cat.record_instance(
            InstanceRecord(
                study_instance_uid=study,
                series_instance_uid=f"{study}.1",
                sop_instance_uid=sop,
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                key=f"raw/{study}/{study}.1/{sop}.dcm",
                size=1234,
                modality="CT",
            )
        )


def finding(
    probability: float,
    version: str = "1",
    role: str = Role.ACTIVE,
    ood: float | None = None,
) -> ModelResult:
    positive = probability >= 0.5
    return ModelResult(
        "ich",
        version,
        codes.SCT.IntracranialHemorrhage,
        probability,
        0.5,
        Priority.URGENT if positive else Priority.ROUTINE,
        "1.1",
        role=role,
        ood_score=ood,
        ood_threshold=None if ood is None else 10.0,
    )


def triage(
    cat: Catalogue,
    study: str,
    results: Sequence[ModelResult] = (),
    timings: dict[str, float] | None = None,
) -> None:
    generation = cat.claim_for_triage(study)
    assert generation is not None
    priority = max((r.priority for r in results), key=lambda p: -p.rank, default=None)
    assert cat.finish_triage(
        study, generation, results, priority or Priority.NOT_ANALYSED, None, timings
    )


def deliver(cat: Catalogue, study: str, after_last_instance: float, kind: str = "sr") -> None:
    """An object of the study delivered ``after_last_instance`` seconds after its last
    instance arrived (the study's arrival is moved back to make it so)."""
    sop = f"{study}.{kind}"
    cat.enqueue_delivery(study, sop, f"results/{study}/{sop}.dcm", "PACS@127.0.0.1:104", kind)
    [row] = [d for d in cat.deliveries() if d.sop_instance_uid == sop]
    cat.mark_delivered(row.id)

    def work(s: Session) -> None:
        delivered = s.get(Delivery, row.id)
        assert delivered is not None and delivered.delivered_at is not None
        at = delivered.delivered_at - timedelta(seconds=after_last_instance)
        s.execute(
            update(Study).where(Study.study_instance_uid == study).values(last_instance_at=at)
        )

    cat.transaction(work)


def age(cat: Catalogue, study: str, seconds: float) -> None:
    """The study's last instance arrived ``seconds`` ago."""

    def work(s: Session) -> None:
        at = utcnow() - timedelta(seconds=seconds)
        s.execute(
            update(Study).where(Study.study_instance_uid == study).values(last_instance_at=at)
        )

    cat.transaction(work)


def test_an_empty_catalogue_counts_nothing(cat: Catalogue) -> None:
    m = scrape(cat)
    assert value(m, "triage_catalogue_up") == 1
    for state in ("receiving", "triaging", "triaged", "not analysed"):
        assert value(m, "triage_studies", state=state) == 0
    assert value(m, "triage_queue_depth") == 0
    assert value(m, "triage_window_studies") == 0
    assert bucket(m, "triage_result_latency_seconds", "+Inf") == 0
    assert value(m, "triage_outbox_rows", state="pending", kind="sr") == 0
    # the receiver's counters of this process are served with the catalogue's figures
    assert ("triage_instances_received_total", (("outcome", "stored"),)) in m
    assert ("process_cpu_seconds_total", ()) in m


def test_studies_by_state_and_the_queue_move_as_studies_arrive(cat: Catalogue) -> None:
    add_study(cat, "1.1")  # still receiving: not in the queue yet
    add_study(cat, "1.2")
    age(cat, "1.2", 60)  # quiet: complete, waiting for a triage run
    add_study(cat, "1.3")
    assert cat.claim_for_triage("1.3") is not None  # triaging
    add_study(cat, "1.4")
    triage(cat, "1.4", [finding(0.9)])
    m = scrape(cat)
    assert value(m, "triage_studies", state="receiving") == 2
    assert value(m, "triage_studies", state="triaging") == 1
    assert value(m, "triage_studies", state="triaged") == 1
    assert value(m, "triage_queue_depth") == 2
    assert value(m, "triage_window_studies") == 4
    assert value(m, "triage_recent_studies", priority="urgent") == 1
    assert value(m, "triage_recent_studies", priority="none") == 3

    add_study(cat, "1.5")
    age(cat, "1.1", 60)
    m = scrape(cat)
    assert value(m, "triage_studies", state="receiving") == 3
    assert value(m, "triage_queue_depth") == 3


def test_latency_runs_from_the_last_instance_to_the_first_sr_delivered(cat: Catalogue) -> None:
    add_study(cat, "2.1")
    triage(cat, "2.1", [finding(0.9)])
    deliver(cat, "2.1", 12.0)
    m = scrape(cat)
    name = "triage_result_latency_seconds"
    assert bucket(m, name, "10.0") == 0
    assert bucket(m, name, "15.0") == 1
    assert bucket(m, name, "+Inf") == 1
    assert value(m, f"{name}_gcount") == 1
    assert value(m, f"{name}_gsum") == pytest.approx(12.0, abs=0.01)
    assert value(m, "triage_recent_outbox_rows", state="delivered", kind="sr") == 1

    # an HL7 message and an SR still pending are not results delivered to the PACS
    add_study(cat, "2.2")
    triage(cat, "2.2", [finding(0.2)])
    deliver(cat, "2.2", 3.0, kind="hl7")
    cat.enqueue_delivery("2.2", "2.2.sr", "results/2.2/2.2.sr.dcm", "PACS@127.0.0.1:104")
    m = scrape(cat)
    assert bucket(m, name, "+Inf") == 1
    assert value(m, "triage_outbox_rows", state="pending", kind="sr") == 1
    assert value(m, "triage_recent_outbox_rows", state="pending", kind="sr") == 1
    assert value(m, "triage_recent_outbox_rows", state="delivered", kind="hl7") == 1
    assert value(m, "triage_outbox_rows", state="pending", kind="hl7") == 0

    # another study delivered moves the histogram
    add_study(cat, "2.3")
    triage(cat, "2.3", [finding(0.7)])
    deliver(cat, "2.3", 45.0)
    m = scrape(cat)
    assert bucket(m, name, "30.0") == 1
    assert bucket(m, name, "60.0") == 2
    assert value(m, f"{name}_gsum") == pytest.approx(57.0, abs=0.02)
    assert value(m, "triage_recent_outbox_rows", state="delivered", kind="sr") == 2


def test_stage_durations_come_from_the_recorded_timings(cat: Catalogue) -> None:
    add_study(cat, "3.1")
    triage(cat, "3.1", [finding(0.9)], {"assemble_s": 0.3, "infer_s": 1.5})
    cat.add_timings("3.1", {"run_s": 4.0})
    add_study(cat, "3.2")
    triage(cat, "3.2", [finding(0.1)], {"assemble_s": 0.7, "infer_s": 0.4})
    m = scrape(cat)
    name = "triage_stage_duration_seconds"
    assert bucket(m, name, "0.5", stage="assemble") == 1
    assert bucket(m, name, "1.0", stage="assemble") == 2
    assert bucket(m, name, "0.5", stage="infer") == 1
    assert bucket(m, name, "2.0", stage="infer") == 2
    assert bucket(m, name, "2.0", stage="run") == 0
    assert bucket(m, name, "5.0", stage="run") == 1
    assert value(m, f"{name}_gsum", stage="infer") == pytest.approx(1.9)


def test_model_scores_positive_and_uncertain_rates_per_version_and_role(cat: Catalogue) -> None:
    for n, (p, ood) in enumerate([(0.1, None), (0.5, 3.0), (0.9, 12.0)]):
        study = f"4.{n}"
        add_study(cat, study)
        triage(cat, study, [finding(p, ood=ood)])
    state = cat.study_state("4.0")
    assert state is not None
    assert cat.record_shadow_results("4.0", state[1], [finding(0.95, "2", Role.SHADOW)])
    m = scrape(cat)
    active = {"model": "ich", "version": "1", "role": "active"}
    assert bucket(m, "triage_model_score", "0.1", **active) == 1
    assert bucket(m, "triage_model_score", "0.45", **active) == 1
    assert bucket(m, "triage_model_score", "0.5", **active) == 2
    assert bucket(m, "triage_model_score", "1.0", **active) == 3
    assert value(m, "triage_model_score_gcount", **active) == 3
    assert value(m, "triage_model_score_gsum", **active) == pytest.approx(1.5)
    assert value(m, "triage_model_positive_ratio", **active) == pytest.approx(2 / 3)
    # of the two results checked for being out of distribution, one was unlike the reference
    assert value(m, "triage_model_uncertain_ratio", **active) == pytest.approx(0.5)
    shadow = {"model": "ich", "version": "2", "role": "shadow"}
    assert bucket(m, "triage_model_score", "0.9", **shadow) == 0
    assert bucket(m, "triage_model_score", "0.95", **shadow) == 1
    assert value(m, "triage_model_positive_ratio", **shadow) == 1
    assert ("triage_model_uncertain_ratio", tuple(sorted(shadow.items()))) not in m


def test_the_window_leaves_out_studies_older_than_a_day(cat: Catalogue) -> None:
    add_study(cat, "5.1")
    triage(cat, "5.1", [finding(0.9)], {"infer_s": 1.0})
    deliver(cat, "5.1", 10.0)
    cat.enqueue_delivery("5.1", "5.1.kos", "results/5.1/kos.dcm", "PACS@127.0.0.1:104", "kos")
    [kos] = cat.deliveries([PENDING])
    cat.mark_attempt_failed(kos.id, "refused", utcnow(), dead=True)
    age(cat, "5.1", 25 * 3600)
    m = scrape(cat)
    # the counts by state are of every study and of every row waiting or dead
    assert value(m, "triage_studies", state="triaged") == 1
    assert value(m, "triage_outbox_rows", state="dead", kind="kos") == 1
    assert value(m, "triage_recent_outbox_rows", state="delivered", kind="sr") == 0
    assert value(m, "triage_window_studies") == 0
    assert value(m, "triage_recent_studies", priority="urgent") == 0
    assert bucket(m, "triage_result_latency_seconds", "+Inf") == 0
    assert (
        "triage_model_score_gcount",
        (("model", "ich"), ("role", "active"), ("version", "1")),
    ) not in m


def test_a_catalogue_that_cannot_be_read_is_up_0_and_the_counters_still_come(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gone.db"
    cat = Catalogue(f"sqlite:///{path}")
    try:
        cat.engine.dispose()
        path.unlink()  # the next connection opens an empty file: no tables to read
        m = scrape(cat)
        assert value(m, "triage_catalogue_up") == 0
        assert ("triage_studies", (("state", "triaged"),)) not in m
        assert ("triage_instances_received_total", (("outcome", "stored"),)) in m
    finally:
        cat.close()
