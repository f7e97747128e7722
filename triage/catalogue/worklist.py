"""The worklist query: every study with its findings and delivery state, urgent first.

One read of each table, put together here, rather than a query per study: the worklist is read
often and grows with every study received.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from triage.catalogue.database import Database
from triage.catalogue.rows import FindingRow, WorklistRow, finding_row
from triage.catalogue.tables import (
    DEAD,
    DELIVERED,
    PENDING,
    Delivery,
    Instance,
    Result,
    Series,
    Study,
)
from triage.results import Role


class Worklist(Database):
    """Every study as the clinicians' worklist shows it."""

    def worklist(self, study_uid: str | None = None) -> list[WorklistRow]:
        """Every study (or the one given), urgent first, then by arrival (oldest first)."""
        with self.session() as s:
            chosen = select(Study)
            if study_uid is not None:
                chosen = chosen.where(Study.study_instance_uid == study_uid)
            studies = list(s.scalars(chosen))
            ids = [st.id for st in studies]

            def of_chosen(query: Any, column: Any) -> Any:
                return query if study_uid is None else query.where(column.in_(ids))

            modalities: dict[int, set[str]] = {}
            for study_id, modality in s.execute(
                of_chosen(select(Series.study_id, Series.modality), Series.study_id)
            ):
                if modality:
                    modalities.setdefault(study_id, set()).add(modality)
            counts: dict[int, int] = {
                study_id: n
                for study_id, n in s.execute(
                    of_chosen(
                        select(Series.study_id, func.count(Instance.id))
                        .join(Instance, Instance.series_id == Series.id)
                        .group_by(Series.study_id),
                        Series.study_id,
                    )
                )
            }
            outbox: dict[int, set[str]] = {}
            for study_id, state in s.execute(
                # the results' delivery: a notification to a person is not one of them
                of_chosen(
                    select(Delivery.study_id, Delivery.state).where(Delivery.kind != "notify"),
                    Delivery.study_id,
                )
            ):
                outbox.setdefault(study_id, set()).add(state)
            findings: dict[int, list[FindingRow]] = {}
            shadow: dict[int, list[FindingRow]] = {}
            for r in s.scalars(of_chosen(select(Result), Result.study_id)):
                (shadow if r.role == Role.SHADOW else findings).setdefault(r.study_id, []).append(
                    finding_row(r)
                )
        rows = [
            WorklistRow(
                study_instance_uid=st.study_instance_uid,
                accession_number=st.accession_number,
                modality="/".join(sorted(modalities.get(st.id, set()))),
                study_description=st.study_description,
                state=st.state,
                priority=st.priority,
                reason=st.reason,
                received_at=st.first_received_at,
                triaged_at=st.triaged_at,
                instances=counts.get(st.id, 0),
                findings=tuple(findings.get(st.id, [])),
                delivery=_delivery_state(outbox.get(st.id, set())),
                shadow_findings=tuple(shadow.get(st.id, [])),
                held_priority=st.held_priority,
                worker=st.worker,
            )
            for st in studies
        ]
        rows.sort(key=lambda row: (row.rank, row.received_at, row.study_instance_uid))
        return rows

    def timeline(self, study_uid: str) -> Timeline | None:
        """When the study's milestones happened (None: the study is not in the catalogue)."""
        with self.session() as s:
            study = s.scalar(select(Study).where(Study.study_instance_uid == study_uid))
            if study is None:
                return None
            delivered = s.scalar(
                select(func.min(Delivery.delivered_at)).where(
                    Delivery.study_id == study.id,
                    Delivery.kind == "sr",
                    Delivery.state == DELIVERED,
                )
            )
            return Timeline(
                received_at=study.first_received_at,
                last_instance_at=study.last_instance_at,
                triaged_at=study.triaged_at,
                delivered_at=delivered,
                timings=json.loads(study.timings) if study.timings else {},
            )


@dataclass(frozen=True)
class Timeline:
    """A study's way through the node: first and last image received, triaged, SR delivered
    (the first revision the PACS accepted), and the seconds each stage took."""

    received_at: datetime
    last_instance_at: datetime
    triaged_at: datetime | None
    delivered_at: datetime | None
    timings: dict[str, float]


def _delivery_state(states: set[str]) -> str | None:
    """One word for a study's outbox rows: the worst of them (dead, then pending)."""
    for state in (DEAD, PENDING, DELIVERED):
        if state in states:
            return state
    return None
