"""What the node's ``/metrics`` reads from the catalogue at scrape time
(`triage.worklist.metrics`): counts of studies and outbox rows, the queue waiting for triage,
and the recent studies' latency, stage timings and model scores.

The recent figures are over a bounded *window*, so that a scrape stays cheap however large the
catalogue grows: the newest `WINDOW_STUDIES` studies whose last instance arrived within
`WINDOW` (found through the index on ``last_instance_at``; their results and outbox rows
through the indexes on ``study_id``). The counts of studies by state, and of the outbox rows
pending or dead, are over the whole catalogue (through the indexes on ``state``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Subquery, and_, case, func, or_, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from triage.catalogue.database import Database
from triage.catalogue.live_rates import LIVE_RATE_CONDITIONS, LiveRates, _share
from triage.catalogue.tables import (
    DEAD,
    PENDING,
    RECEIVING,
    TRIAGING,
    Delivery,
    Result,
    Study,
    utcnow,
)
from triage.errors import StorageError
from triage.results import DeliveryState, Priority, StudyState

#: how far back the recent figures look, and how many studies they take at most
WINDOW = timedelta(hours=24)
WINDOW_STUDIES = 5000
#: the upper bounds of the model score buckets: 0.05, 0.10, ... 1.0
SCORE_BUCKETS = tuple(round(0.05 * n, 2) for n in range(1, 21))
#: what an outbox row can be (``Delivery.kind``)
KINDS = ("sr", "kos", "seg", "hl7")
#: a study's priority before any triage run gave it one
NO_PRIORITY = "none"


@dataclass(frozen=True)
class ModelScores:
    """One model version's results (in one role) on the studies of the window."""

    model_name: str
    model_version: str
    role: str
    #: how many results, the positive rate and the uncertain (OOD) rate (`LiveRates`)
    rates: LiveRates
    #: the sum of the probabilities
    score_sum: float
    #: per bound of `SCORE_BUCKETS`: how many results have a probability at or below it
    score_buckets: tuple[int, ...]


@dataclass(frozen=True)
class MetricsFigures:
    """What one scrape reads from the catalogue, in one transaction."""

    #: every study in the catalogue, by state (each state present, 0 when none)
    studies_by_state: Mapping[str, int]
    #: the studies waiting for a triage run: receiving and quiet for the quiet period (complete,
    #: not yet claimed), plus triaging (claimed, not yet finished)
    queue_depth: int
    #: the outbox rows pending or dead, by (state, kind)
    outbox: Mapping[tuple[str, str], int]
    #: how many studies the window holds
    window_studies: int
    #: the window's studies by priority (`NO_PRIORITY` before triage gave one)
    recent_by_priority: Mapping[str, int]
    #: the outbox rows of the window's studies, by (state, kind)
    recent_outbox: Mapping[tuple[str, str], int]
    #: seconds from a study's last instance received to its first SR delivered after it
    latencies: tuple[float, ...] = ()
    #: per stage of the last triage run's timings (``assemble``, ``infer``, ``run``, ...): seconds
    stage_seconds: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    models: tuple[ModelScores, ...] = ()


class MetricsQueries(Database):
    """The part of the catalogue that ``/metrics`` reads."""

    def metrics_figures(self, quiet_seconds: float, now: datetime | None = None) -> MetricsFigures:
        """Every figure of a scrape; a database that cannot be reached is a StorageError.

        ``quiet_seconds``: the quiet period (TRIAGE_QUIET_SECONDS) after which a receiving
        study counts as complete, waiting in the queue.
        """
        at = now or utcnow()
        try:
            with self.session() as s:
                window = _window(at)
                return MetricsFigures(
                    studies_by_state=_by_state(s),
                    queue_depth=_queue_depth(s, at - timedelta(seconds=quiet_seconds)),
                    outbox=_outbox(s),
                    recent_outbox=_recent_outbox(s, window),
                    window_studies=int(s.scalar(select(func.count()).select_from(window)) or 0),
                    recent_by_priority=_by_priority(s, window),
                    latencies=_latencies(s, window),
                    stage_seconds=_stage_seconds(s, window),
                    models=_models(s, window),
                )
        except DBAPIError as exc:  # unreachable, or not (yet) a catalogue
            raise StorageError(f"cannot read the catalogue's metrics: {exc.orig}") from exc


def _window(at: datetime) -> Subquery:
    return (
        select(Study.id)
        .where(Study.last_instance_at >= at - WINDOW)
        .order_by(Study.last_instance_at.desc())
        .limit(WINDOW_STUDIES)
        .subquery("recent")
    )


def _by_state(s: Session) -> dict[str, int]:
    counts = {state.value: 0 for state in StudyState}
    for state, n in s.execute(select(Study.state, func.count(Study.id)).group_by(Study.state)):
        counts[state] = int(n)
    return counts


def _queue_depth(s: Session, quiet_since: datetime) -> int:
    waiting = or_(
        and_(Study.state == RECEIVING, Study.last_instance_at <= quiet_since),
        Study.state == TRIAGING,
    )
    return int(s.scalar(select(func.count(Study.id)).where(waiting)) or 0)


def _outbox(s: Session) -> dict[tuple[str, str], int]:
    """The rows waiting or dead-lettered: few, and found through the index on ``state``
    (delivered rows, which stay and grow with every study, are counted over the window)."""
    rows = s.execute(
        select(Delivery.state, Delivery.kind, func.count(Delivery.id))
        .where(Delivery.state.in_([PENDING, DEAD]))
        .group_by(Delivery.state, Delivery.kind)
    )
    return _by_state_and_kind(rows, (PENDING, DEAD))


def _recent_outbox(s: Session, window: Subquery) -> dict[tuple[str, str], int]:
    rows = s.execute(
        select(Delivery.state, Delivery.kind, func.count(Delivery.id))
        .join(window, window.c.id == Delivery.study_id)
        .group_by(Delivery.state, Delivery.kind)
    )
    return _by_state_and_kind(rows, tuple(DeliveryState))


def _by_state_and_kind(rows: Iterable[Any], states: Iterable[str]) -> dict[tuple[str, str], int]:
    """Every (state, kind) pair of the states given and the kinds (`KINDS`, and any other
    found): 0 when there is none, so that a series does not vanish when its last row goes."""
    found = {(str(state), str(kind)): int(n) for state, kind, n in rows}
    kinds = sorted({kind for _state, kind in found} | set(KINDS))
    return {(str(st), kind): found.get((str(st), kind), 0) for st in states for kind in kinds}


def _by_priority(s: Session, window: Subquery) -> dict[str, int]:
    counts = {p.value: 0 for p in Priority} | {NO_PRIORITY: 0}
    rows = s.execute(
        select(Study.priority, func.count(Study.id))
        .join(window, window.c.id == Study.id)
        .group_by(Study.priority)
    )
    for priority, n in rows:
        counts[priority or NO_PRIORITY] = int(n)
    return counts


def _latencies(s: Session, window: Subquery) -> tuple[float, ...]:
    """The first SR delivered at or after the last instance: what the PACS shows for the
    images as they are now (an SR of an earlier generation, before a late image, is left out)."""
    rows = s.execute(
        select(Study.last_instance_at, func.min(Delivery.delivered_at))
        .join(window, window.c.id == Study.id)
        .join(Delivery, Delivery.study_id == Study.id)
        .where(Delivery.kind == "sr", Delivery.delivered_at >= Study.last_instance_at)
        .group_by(Study.id, Study.last_instance_at)
    )
    return tuple((first - last).total_seconds() for last, first in rows if first is not None)


def _stage_seconds(s: Session, window: Subquery) -> dict[str, tuple[float, ...]]:
    """Each ``<stage>_s`` key of the studies' timings (`Studies.add_timings`), as ``<stage>``."""
    out: dict[str, list[float]] = {}
    rows = s.scalars(
        select(Study.timings)
        .join(window, window.c.id == Study.id)
        .where(Study.timings.is_not(None))
    )
    for text in rows:
        try:
            timings = json.loads(text or "{}")
        except ValueError:
            continue
        if not isinstance(timings, dict):
            continue
        for key, value in timings.items():
            if _is_stage(key) and isinstance(value, int | float) and math.isfinite(value):
                out.setdefault(key.removesuffix("_s"), []).append(float(value))
    return {stage: tuple(values) for stage, values in sorted(out.items())}


def _is_stage(key: Any) -> bool:
    """A stage key as the pipeline writes them (``infer_s``): a short name, no odd characters,
    so that a stray key cannot add label values without bound."""
    return (
        isinstance(key, str)
        and key.endswith("_s")
        and len(key) <= 34
        and key[:-2].replace("_", "").isalnum()
        and key.isascii()
    )


def _models(s: Session, window: Subquery) -> tuple[ModelScores, ...]:
    names = list(LIVE_RATE_CONDITIONS)
    buckets = [func.sum(case((Result.probability <= b, 1), else_=0)) for b in SCORE_BUCKETS]
    rows = s.execute(
        select(
            Result.model_name,
            Result.model_version,
            Result.role,
            func.count(Result.id),
            func.sum(Result.probability),
            *(_share(LIVE_RATE_CONDITIONS[n]) for n in names),
            *buckets,
        )
        .join(window, window.c.id == Result.study_id)
        .group_by(Result.model_name, Result.model_version, Result.role)
        .order_by(Result.model_name, Result.model_version, Result.role)
    )
    out = []
    for name, version, role, n, total, *rest in rows:
        rates, counts = rest[: len(names)], rest[len(names) :]
        out.append(
            ModelScores(
                model_name=name,
                model_version=version,
                role=role,
                rates=LiveRates(
                    results=int(n),
                    **{
                        k: None if r is None else float(r)
                        for k, r in zip(names, rates, strict=True)
                    },
                ),
                score_sum=float(total or 0.0),
                score_buckets=tuple(int(c or 0) for c in counts),
            )
        )
    return tuple(out)
