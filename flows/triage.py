"""One flow run per complete study, with a few coarse tasks; and the outbox delivery flow.

Tasks pass study UIDs, assignments and results (small values), never pixel arrays. The work
itself is in ``triage.app.pipeline`` and ``triage.deliver.outbox``; the services (store,
catalogue, models) come from `triage.app.services.node_services`: the node's own when it runs
in this process, else opened from the TRIAGE_* environment (a Prefect worker).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from sqlalchemy.exc import OperationalError

from triage.app import pipeline
from triage.app.services import node_services as services
from triage.deliver.outbox import deliver_due
from triage.errors import StorageError
from triage.report.documents import ReportPlan
from triage.results import SHADOW


def transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a task only when another try can succeed: the catalogue or the object store failed
    (a database locked for longer than its wait, a full or read-only disk). A failure that the
    same input gives again (a model error, an unreadable series, a bug) is not retried."""
    return isinstance(getattr(state, "data", None), StorageError | OperationalError)


RETRY_TRANSIENT: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": 2,
    "retry_condition_fn": transient,
}


# seconds spent in the task bodies (the library's work) per study, in this process: the rest
# of a flow run's time is Prefect's (recorded as the study's work_s beside the node's run_s)
_work_seconds: dict[str, float] = defaultdict(float)
_work_lock = threading.Lock()


@contextmanager
def working(study_uid: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        with _work_lock:
            _work_seconds[study_uid] += time.perf_counter() - t0


@task(name="plan", cache_policy=NO_CACHE, **RETRY_TRANSIENT)
def plan_task(study_uid: str) -> list[pipeline.Assignment]:
    with working(study_uid):
        return pipeline.plan_study(services(), study_uid)


@task(name="analyse", cache_policy=NO_CACHE)
def analyse_task(study_uid: str, assignment: pipeline.Assignment) -> pipeline.Analysis:
    with working(study_uid):
        return pipeline.analyse(services(), study_uid, assignment)


@task(name="report", cache_policy=NO_CACHE, **RETRY_TRANSIENT)
def report_task(study_uid: str, analyses: list[pipeline.Analysis]) -> ReportPlan:
    with working(study_uid):
        return pipeline.report(services(), study_uid, analyses)


@task(name="deliver", cache_policy=NO_CACHE, **RETRY_TRANSIENT)
def deliver_task(study_uid: str) -> dict[str, int]:
    """Send the study's new documents now. A PACS that fails is not retried here: the outbox
    records the failed try and the node's delivery loop retries with backoff; only a catalogue
    that could not record the outcome is (a document sent twice is the same SOP instance)."""
    with working(study_uid):
        svc = services()
        settings = svc.settings
        rows = svc.catalogue.claim_deliveries(
            settings.worker, settings.lease_seconds, study_uid=study_uid
        )
        summary = deliver_due(svc.store, svc.catalogue, svc.settings, only=rows)
        return vars(summary)


@flow(name="triage-study", log_prints=False)
def triage_study(study_uid: str, generation: int) -> str:
    """Triage one complete study: plan, analyse with each active model, report, record,
    deliver; then the shadow models, off the latency path of the active result."""
    t0 = time.perf_counter()
    svc = services()
    analyses = []
    shadow = []
    for assignment in plan_task(study_uid):
        if assignment.role == SHADOW:
            shadow.append(assignment)
        elif assignment.model_name:
            analyses.append(analyse_task(study_uid, assignment))
        else:
            analyses.append(pipeline.Analysis("", None, assignment.reason))
    plan = report_task(study_uid, analyses)
    timings = pipeline.merge_timings(analyses)
    timings["report_s"] = plan.seconds
    timings["triage_s"] = time.perf_counter() - t0
    with working(study_uid):
        priority = pipeline.finish(svc, study_uid, generation, analyses, plan, timings)
    t1 = time.perf_counter()
    if any(revision.objects for revision in plan.revisions):
        deliver_task(study_uid)
    deliver_s = time.perf_counter() - t1
    shadow_results = [
        analyse_task(study_uid, assignment) for assignment in shadow if assignment.model_name
    ]
    with working(study_uid):
        pipeline.finish_shadow(svc, study_uid, generation, shadow_results)
    with _work_lock:
        work_s = _work_seconds.pop(study_uid, 0.0)
    svc.catalogue.add_timings(study_uid, {"deliver_s": deliver_s, "work_s": work_s})
    return priority.value


@flow(name="warm-up")
def warm_up() -> None:
    """A no-op flow run: starts Prefect's embedded API when the node starts, not on the first
    study."""


@flow(name="deliver-outbox")
def deliver_outbox() -> dict[str, Any]:
    """Retry every outbox item that is due."""
    svc = services()
    return vars(deliver_due(svc.store, svc.catalogue, svc.settings))
