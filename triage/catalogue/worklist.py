"""The worklist query: every study with its findings and delivery state, urgent first.

One read of each table, put together here, rather than a query per study: the worklist is read
often and grows with every study received.
"""

from __future__ import annotations

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

    def worklist(self) -> list[WorklistRow]:
        """Every study, urgent first, then by arrival (oldest first)."""
        with self.session() as s:
            studies = list(s.scalars(select(Study)))
            modalities: dict[int, set[str]] = {}
            for study_id, modality in s.execute(select(Series.study_id, Series.modality)):
                if modality:
                    modalities.setdefault(study_id, set()).add(modality)
            counts: dict[int, int] = {
                study_id: n
                for study_id, n in s.execute(
                    select(Series.study_id, func.count(Instance.id))
                    .join(Instance, Instance.series_id == Series.id)
                    .group_by(Series.study_id)
                )
            }
            outbox: dict[int, set[str]] = {}
            for study_id, state in s.execute(select(Delivery.study_id, Delivery.state)):
                outbox.setdefault(study_id, set()).add(state)
            findings: dict[int, list[FindingRow]] = {}
            shadow: dict[int, list[FindingRow]] = {}
            for r in s.scalars(select(Result)):
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


def _delivery_state(states: set[str]) -> str | None:
    """One word for a study's outbox rows: the worst of them (dead, then pending)."""
    for state in (DEAD, PENDING, DELIVERED):
        if state in states:
            return state
    return None
