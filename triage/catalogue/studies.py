"""Studies: completion, the outcome of a triage run, re-runs and acknowledgements (the claim
of a run is ``claims.py``'s).

Study states: ``receiving`` (instances arriving) -> ``triaging`` -> ``triaged`` or
``not analysed``. A late image puts the study back to ``receiving`` and bumps its generation, so
it is triaged again (``Receiving.record_instance``); a triage run that finishes on an older
generation records nothing. The report revisions recorded with a run's outcome, and the
acknowledgement of a held lower priority, are ``triage.catalogue.reports``'s work.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from triage.catalogue import reports
from triage.catalogue.database import Database
from triage.catalogue.rows import (
    AcknowledgementRow,
    ChainHead,
    NewRevision,
    SeriesSummary,
    series_summary,
)
from triage.catalogue.tables import (
    NOT_ANALYSED,
    RECEIVING,
    TRIAGED,
    TRIAGING,
    Instance,
    Result,
    Series,
    Study,
    study_row,
    utcnow,
)
from triage.errors import StorageError
from triage.results import ModelResult, Priority


class Studies(Database):
    """The state of each study through triage, its results, timings and report revisions."""

    def quiet_studies(self, quiet_seconds: float, now: datetime | None = None) -> list[str]:
        """Studies still receiving whose last instance came more than quiet_seconds ago."""
        cutoff = (now or utcnow()) - timedelta(seconds=quiet_seconds)
        with self.session() as s:
            rows = s.scalars(
                select(Study.study_instance_uid)
                .where(Study.state == RECEIVING, Study.last_instance_at <= cutoff)
                .order_by(Study.last_instance_at)
            )
            return list(rows)

    def series_of(self, study_uid: str) -> list[SeriesSummary]:
        with self.session() as s:
            study = study_row(s, study_uid)
            if study is None:
                return []
            out = []
            for series in s.scalars(select(Series).where(Series.study_id == study.id)):
                instances = list(
                    s.execute(
                        select(
                            Instance.key,
                            Instance.image_type,
                            Instance.sop_class_uid,
                            Instance.frames,
                        ).where(Instance.series_id == series.id)
                    )
                )
                out.append(series_summary(series, instances))
            return out

    def finish_triage(
        self,
        study_uid: str,
        generation: int,
        results: Sequence[ModelResult],
        priority: Priority,
        reason: str | None,
        timings: dict[str, float] | None = None,
        *,
        revisions: Sequence[NewRevision] = (),
        current: dict[str, str] | None = None,
        hold_downgrades: bool = True,
    ) -> bool:
        """Record the outcome of a triage run in one transaction: results, the study's state
        and priority, the new report revisions (released into the outbox, or held). False, and
        nothing recorded, when the study moved on meanwhile (new images: it will re-run).

        ``current``: chain -> fingerprint of what each chain says now (new or unchanged).
        With ``hold_downgrades``, a priority below the one already reported (urgent -> routine
        or not analysed) is held: the study stays at the reported priority, the lower one is
        kept as ``held_priority`` and its revisions wait for `acknowledge`.
        """

        def work(s: Session) -> bool:
            study = study_row(s, study_uid)
            if study is None or study.generation != generation or study.state != TRIAGING:
                return False  # a newer run owns the study: leave its results alone
            sr_of = {r.chain: r.sr_sop_instance_uid for r in revisions}
            for res in results:
                _record_result(s, study, res, sr_of.get(res.model_name))
            reported = study.priority if reports.has_released(s, study.id) else None
            hold = (
                hold_downgrades and reported is not None and priority.rank > Priority(reported).rank
            )
            reports.add_revisions(s, study, revisions, current or {}, hold=hold)
            study.state = NOT_ANALYSED if priority is Priority.NOT_ANALYSED else TRIAGED
            study.lease_expires = None
            if hold:
                study.held_priority = priority.value  # the reported priority stays
            else:
                study.priority = priority.value
                study.held_priority = None
            study.reason = reason
            study.triaged_at = utcnow()
            study.timings = json.dumps(timings or {}, sort_keys=True)
            return True

        return self.transaction(work)

    def record_shadow_results(
        self, study_uid: str, generation: int, results: Sequence[ModelResult]
    ) -> bool:
        """Add the shadow models' results to the run of ``generation`` (already finished: they
        run after the active result went out); False, and nothing recorded, when the study
        moved on meanwhile."""

        def work(s: Session) -> bool:
            study = study_row(s, study_uid)
            if study is None or study.generation != generation:
                return False
            for res in results:
                _record_result(s, study, res, None)
            return True

        return self.transaction(work)

    def acknowledge(self, study_uid: str, *, who: str, reason: str) -> AcknowledgementRow:
        """A person accepts the held lower priority of a study: its held revisions go to the
        PACS, the study takes that priority, and who, when and why is recorded."""
        if not who.strip():
            raise StorageError("say who acknowledges (--by NAME): the audit records it")
        if not reason.strip():
            raise StorageError("say why the lower priority is right (--reason TEXT)")

        def work(s: Session) -> AcknowledgementRow:
            study = study_row(s, study_uid)
            if study is None:
                raise StorageError(f"study {study_uid} is not in the catalogue")
            done = reports.release_held(s, study, who=who, reason=reason)
            if done is None:
                raise StorageError(
                    f"study {study_uid} has no lower priority waiting for acknowledgement"
                )
            return done

        return self.transaction(work)

    def acknowledgements(self) -> list[AcknowledgementRow]:
        """Every accepted downgrade, oldest first: the audit of `triage ack`."""
        with self.session() as s:
            return reports.acknowledgements(s)

    def chain_heads(self, study_uid: str) -> dict[str, ChainHead]:
        """Where each of the study's report chains stands (`triage.catalogue.reports`)."""
        with self.session() as s:
            study = study_row(s, study_uid)
            return {} if study is None else reports.chain_heads(s, study.id)

    def reopen(self, study_uid: str) -> bool:
        """Queue a study for another triage run (`triage rerun`)."""

        def work(s: Session) -> bool:
            study = study_row(s, study_uid)
            if study is None:
                return False
            study.state = RECEIVING
            study.generation += 1
            study.lease_expires = None
            return True

        return self.transaction(work)

    def study_timings(self) -> dict[str, dict[str, float]]:
        """Per-study stage timings of the last triage run (for benchmarks and operators)."""
        with self.session() as s:
            rows = s.execute(select(Study.study_instance_uid, Study.timings))
            return {uid: json.loads(t) for uid, t in rows if t}

    def add_timings(self, study_uid: str, timings: dict[str, float]) -> None:
        def work(s: Session) -> None:
            study = study_row(s, study_uid)
            if study is not None:
                study.timings = json.dumps(
                    {**json.loads(study.timings or "{}"), **timings}, sort_keys=True
                )

        self.transaction(work)

    def study_state(self, study_uid: str) -> tuple[str, int] | None:
        with self.session() as s:
            row = s.execute(
                select(Study.state, Study.generation).where(Study.study_instance_uid == study_uid)
            ).first()
            return (row.state, row.generation) if row else None

    def counts(self) -> dict[str, int]:
        with self.session() as s:
            by_state: dict[str, int] = {
                state: n
                for state, n in s.execute(
                    select(Study.state, func.count(Study.id)).group_by(Study.state)
                )
            }
            instances = s.scalar(select(func.count(Instance.id))) or 0
        return {"instances": instances, **by_state}


def _details_json(res: ModelResult) -> str | None:
    details: dict[str, Any] = {}
    if res.lesion_volume_ml is not None:
        details["lesion_volume_ml"] = round(float(res.lesion_volume_ml), 4)
    if res.lesion_centre_lps is not None:
        details["lesion_centre_lps"] = [round(float(v), 2) for v in res.lesion_centre_lps]
    if res.key_point_lps is not None:
        details["key_point_lps"] = [round(float(v), 2) for v in res.key_point_lps]
    if res.lesion_mask_key is not None:
        details["lesion_mask_key"] = res.lesion_mask_key
    return json.dumps(details, sort_keys=True) if details else None


def _record_result(s: Session, study: Study, res: ModelResult, sr_uid: str | None) -> None:
    row = s.scalar(
        select(Result).where(
            Result.study_id == study.id,
            Result.model_name == res.model_name,
            Result.model_version == res.model_version,
        )
    )
    if row is None:
        row = Result(study_id=study.id, model_name=res.model_name, model_version=res.model_version)
        s.add(row)
    row.series_instance_uid = res.series_instance_uid
    row.finding_value = res.finding.value
    row.finding_scheme = res.finding.scheme_designator
    row.finding_meaning = res.finding.meaning
    row.probability = float(res.probability)
    row.threshold = float(res.threshold)
    row.priority = res.priority.value
    if sr_uid is not None:  # else the chain's document did not change
        row.sr_sop_instance_uid = sr_uid
    row.created_at = utcnow()
    row.role = res.role
    row.details = _details_json(res)
    row.ood_score = None if res.ood_score is None else float(res.ood_score)
    row.ood_threshold = None if res.ood_threshold is None else float(res.ood_threshold)
