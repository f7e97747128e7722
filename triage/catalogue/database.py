"""The catalogue: what was received, what state each study is in, what the models said.

SQLAlchemy over SQLite by default; nothing here is SQLite-specific beyond connection tuning, so
the same schema runs on PostgreSQL when several machines share the work.

Study states: ``receiving`` (instances arriving) -> ``triaging`` -> ``triaged`` or
``not analysed``. A late image puts the study back to ``receiving`` and bumps its generation, so
it is triaged again (other objects do not: ``record_instance``); a triage run that finishes on an
older generation does not overwrite it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import create_engine, event, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from triage.catalogue.reports import (
    acknowledgements,
    add_revisions,
    chain_heads,
    has_released,
    release_held,
)
from triage.catalogue.rows import (
    AcknowledgementRow,
    ChainHead,
    DeliveryRow,
    FindingRow,
    InstanceRecord,
    NewRevision,
    SeriesSummary,
    WorklistRow,
    delivery_row,
    finding_row,
)
from triage.catalogue.tables import (
    DEAD,
    DELIVERED,
    NOT_ANALYSED,
    PENDING,
    RECEIVING,
    TRIAGED,
    TRIAGING,
    Base,
    Delivery,
    Instance,
    Result,
    Series,
    Study,
    study_row,
    utcnow,
)
from triage.errors import StorageError
from triage.results import ModelResult, Priority

T = TypeVar("T")


BUSY_TIMEOUT_SECONDS = 30
# How long the receiver's catalogue write waits for a locked database, all tries together,
# before it gives up and the C-STORE is answered 0xA700: below the DIMSE timeouts of common
# senders (Orthanc 10 s, pynetdicom 30 s), so the sender hears a status it retries on instead
# of timing out and aborting the association.
RECORD_LOCK_WAIT_SECONDS = 8.0


# Columns added since the first release, added to an older database when it is opened
_ADDED_COLUMNS = (
    ("results", "role", "VARCHAR(16) NOT NULL DEFAULT 'active'"),
    ("results", "details", "TEXT"),
    ("studies", "held_priority", "VARCHAR(32)"),
    ("outbox", "kind", "VARCHAR(16) NOT NULL DEFAULT 'sr'"),
    ("series", "convolution_kernel", "VARCHAR(64) NOT NULL DEFAULT ''"),
    ("series", "slice_thickness", "FLOAT"),
    ("series", "contrast_agent", "VARCHAR(64) NOT NULL DEFAULT ''"),
    ("instances", "frames", "INTEGER NOT NULL DEFAULT 1"),
)


def _add_missing_columns(engine: Engine) -> None:
    from sqlalchemy import inspect, text

    for table, column, ddl in _ADDED_COLUMNS:
        if column in {c["name"] for c in inspect(engine).get_columns(table)}:
            continue
        try:
            with engine.begin() as connection:
                connection.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}"))
        except (OperationalError, ProgrammingError):
            # another process added it at the same moment
            if column not in {c["name"] for c in inspect(engine).get_columns(table)}:
                raise


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL: a commit is not fsynced on its own. The received bytes are (the store fsyncs
    # them before the receiver answers), and after an unclean stop the receiver catalogues
    # any stored instance whose row was lost (Receiver.reconcile).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_SECONDS * 1000}")
    cursor.close()


def _reset_busy_timeout(dbapi_connection: Any, _record: Any) -> None:
    """A connection goes back to the pool with the default lock wait (a bounded write may
    have shortened it)."""
    if dbapi_connection is not None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_SECONDS * 1000}")
        cursor.close()


class Catalogue:
    def __init__(self, url: str) -> None:
        try:
            if url.startswith("sqlite"):
                self.engine: Engine = create_engine(
                    url, connect_args={"timeout": BUSY_TIMEOUT_SECONDS}
                )
                event.listen(self.engine, "connect", _sqlite_pragmas)
                event.listen(self.engine, "checkin", _reset_busy_timeout)
            else:
                self.engine = create_engine(url, pool_pre_ping=True)
            Base.metadata.create_all(self.engine)
            _add_missing_columns(self.engine)
        except OperationalError as exc:
            raise StorageError(f"cannot open the catalogue database {url}: {exc.orig}") from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.record_lock_wait_seconds = RECORD_LOCK_WAIT_SECONDS
        # None: a write tries 5 times, each waiting up to BUSY_TIMEOUT_SECONDS for a lock
        self.lock_wait_seconds: float | None = None

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def transaction(
        self, work: Callable[[Session], T], attempts: int = 5, deadline: float | None = None
    ) -> T:
        """Run ``work`` in one transaction, retrying when the database is momentarily locked or
        busy; what ``work`` returns is returned.

        Each try waits up to BUSY_TIMEOUT_SECONDS for a lock. With ``deadline`` (a
        ``time.monotonic()`` value), or ``lock_wait_seconds`` set, the tries together wait that
        long at most, and then raise StorageError like any other failure.
        """
        if deadline is None and self.lock_wait_seconds is not None:
            deadline = time.monotonic() + self.lock_wait_seconds
        attempt = 0
        while True:
            try:
                with self.session() as session:
                    if deadline is not None:
                        self._limit_lock_wait(session, deadline - time.monotonic())
                    return work(session)
            except OperationalError as exc:
                message = str(exc.orig).lower()
                busy = "locked" in message or "busy" in message
                if deadline is not None:
                    gave_up = time.monotonic() >= deadline
                else:
                    gave_up = attempt >= attempts - 1
                if not busy or gave_up:
                    raise StorageError(f"catalogue write failed: {exc.orig}") from exc
            pause = min(0.05 * 2**attempt, 1.0)
            if deadline is not None:
                pause = max(0.0, min(pause, deadline - time.monotonic()))
            time.sleep(pause)
            attempt += 1

    def _limit_lock_wait(self, session: Session, seconds: float) -> None:
        """Wait at most ``seconds`` for a lock in this transaction."""
        millis = max(1, int(seconds * 1000))
        if self.engine.dialect.name == "sqlite":  # reset when the connection is checked in
            session.connection().exec_driver_sql(f"PRAGMA busy_timeout={millis}")
        elif self.engine.dialect.name == "postgresql":  # ends with the transaction
            session.connection().exec_driver_sql(f"SET LOCAL lock_timeout = {millis}")

    # -- receiving -------------------------------------------------------------------------

    def has_instance(self, sop_instance_uid: str) -> bool:
        with self.session() as s:
            found = s.scalar(
                select(Instance.id).where(Instance.sop_instance_uid == sop_instance_uid)
            )
            return found is not None

    def record_instance(self, rec: InstanceRecord) -> bool:
        """Catalogue a stored instance; False when it was already there (stored once).

        What a new instance does to its study: an image the models analyse
        (``rec.triage_input``) arriving after triage has started or finished re-opens the study
        (state receiving, generation + 1: it is triaged again) and restarts its quiet period.
        Anything else (a secondary capture, dose report, presentation state, KOS, another SR,
        this node's own SR forwarded back) is catalogued beside it and changes neither state,
        generation nor arrival time, unless the study is still receiving: then it restarts the
        quiet period, as the rest of a study forwarded with it is likely to follow. A study
        first seen through such an instance starts receiving like any other.

        A locked or busy database is waited for, but ``record_lock_wait_seconds`` at most
        (RECORD_LOCK_WAIT_SECONDS, 8 s); then StorageError, which the receiver answers with
        0xA700 so that the sender retries. The bytes it stored stay in the store: the retry
        catalogues them, or the reconciliation after an unclean stop does.
        """
        deadline = time.monotonic() + self.record_lock_wait_seconds

        def work(s: Session) -> bool:
            if s.scalar(
                select(Instance.id).where(Instance.sop_instance_uid == rec.sop_instance_uid)
            ):
                return False
            now = utcnow()
            study = study_row(s, rec.study_instance_uid)
            if study is None:
                study = Study(
                    study_instance_uid=rec.study_instance_uid,
                    accession_number=rec.accession_number,
                    patient_id=rec.patient_id,
                    study_description=rec.study_description,
                    study_date=rec.study_date,
                    first_received_at=now,
                    last_instance_at=now,
                    state=RECEIVING,
                    generation=1,
                )
                s.add(study)
                s.flush()
            elif rec.triage_input:
                study.last_instance_at = now
                if study.state != RECEIVING:
                    study.state = RECEIVING
                    study.generation += 1
            elif study.state == RECEIVING:
                study.last_instance_at = now
            series = s.scalar(
                select(Series).where(Series.series_instance_uid == rec.series_instance_uid)
            )
            if series is None:
                series = Series(
                    study_id=study.id,
                    series_instance_uid=rec.series_instance_uid,
                    modality=rec.modality,
                    body_part=rec.body_part,
                    series_description=rec.series_description,
                    series_number=rec.series_number,
                    convolution_kernel=rec.convolution_kernel,
                    slice_thickness=rec.slice_thickness,
                    contrast_agent=rec.contrast_agent,
                )
                s.add(series)
                s.flush()
            s.add(
                Instance(
                    series_id=series.id,
                    sop_instance_uid=rec.sop_instance_uid,
                    sop_class_uid=rec.sop_class_uid,
                    transfer_syntax_uid=rec.transfer_syntax_uid,
                    image_type=rec.image_type,
                    frames=rec.frames,
                    key=rec.key,
                    size=rec.size,
                    received_at=now,
                )
            )
            return True

        for _ in range(5):
            try:
                return self.transaction(work, deadline=deadline)
            except IntegrityError:
                # another writer created the same study, series or instance at the same moment:
                # run again; it now finds their rows (and False if the instance itself was theirs)
                continue
        raise StorageError(f"catalogue write of {rec.sop_instance_uid} kept conflicting; retry")

    # -- completion and triage -------------------------------------------------------------

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

    def claim_for_triage(self, study_uid: str, quiet_seconds: float | None = None) -> int | None:
        """Move a study to triaging; returns its generation, or None if someone else has it."""

        def work(s: Session) -> int | None:
            study = study_row(s, study_uid)
            if study is None or study.state == TRIAGING:
                return None
            if quiet_seconds is not None:
                cutoff = utcnow() - timedelta(seconds=quiet_seconds)
                if study.state != RECEIVING or study.last_instance_at > cutoff:
                    return None
            result = s.execute(
                update(Study)
                .where(
                    Study.id == study.id,
                    Study.generation == study.generation,
                    Study.state == study.state,
                )
                .values(state=TRIAGING)
            )
            return study.generation if result.rowcount == 1 else None  # type: ignore[attr-defined]

        return self.transaction(work)

    def requeue_interrupted(self) -> list[str]:
        """Studies left in triaging by a crash go back to receiving, to be triaged again.

        Their generation moves on, as for a late instance: a run of the old generation that is
        still alive somewhere (a Prefect worker on another machine, a node sharing this
        database) can then no longer record its result over the new run's.
        """

        def work(s: Session) -> list[str]:
            studies = list(s.scalars(select(Study).where(Study.state == TRIAGING)))
            for study in studies:
                study.state = RECEIVING
                study.generation += 1
            return [st.study_instance_uid for st in studies]

        return self.transaction(work)

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
                out.append(
                    SeriesSummary(
                        series_instance_uid=series.series_instance_uid,
                        modality=series.modality,
                        body_part=series.body_part,
                        series_description=series.series_description,
                        series_number=series.series_number,
                        image_types=tuple(sorted({row.image_type for row in instances})),
                        keys=tuple(row.key for row in instances),
                        sop_classes=tuple(sorted({row.sop_class_uid for row in instances})),
                        convolution_kernel=series.convolution_kernel or "",
                        slice_thickness=series.slice_thickness,
                        contrast_agent=series.contrast_agent or "",
                        frames=sum(int(row.frames or 1) for row in instances),
                    )
                )
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
            reported = study.priority if has_released(s, study.id) else None
            hold = (
                hold_downgrades and reported is not None and priority.rank > Priority(reported).rank
            )
            add_revisions(s, study, revisions, current or {}, hold=hold)
            study.state = NOT_ANALYSED if priority is Priority.NOT_ANALYSED else TRIAGED
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
            done = release_held(s, study, who=who, reason=reason)
            if done is None:
                raise StorageError(
                    f"study {study_uid} has no lower priority waiting for acknowledgement"
                )
            return done

        return self.transaction(work)

    def acknowledgements(self) -> list[AcknowledgementRow]:
        """Every accepted downgrade, oldest first: the audit of `triage ack`."""
        with self.session() as s:
            return acknowledgements(s)

    def chain_heads(self, study_uid: str) -> dict[str, ChainHead]:
        """Where each of the study's report chains stands (`triage.catalogue.reports`)."""
        with self.session() as s:
            study = study_row(s, study_uid)
            return {} if study is None else chain_heads(s, study.id)

    def reopen(self, study_uid: str) -> bool:
        """Queue a study for another triage run (`triage rerun`)."""

        def work(s: Session) -> bool:
            study = study_row(s, study_uid)
            if study is None:
                return False
            study.state = RECEIVING
            study.generation += 1
            return True

        return self.transaction(work)

    # -- outbox ----------------------------------------------------------------------------

    def enqueue_delivery(
        self, study_uid: str, sop_uid: str, key: str, destination: str, kind: str = "sr"
    ) -> None:
        """Put an object in the outbox; re-enqueuing the same one resets it to pending."""

        def work(s: Session) -> None:
            study = study_row(s, study_uid)
            if study is None:
                raise StorageError(f"study {study_uid} is not in the catalogue")
            row = s.scalar(
                select(Delivery).where(
                    Delivery.sop_instance_uid == sop_uid, Delivery.destination == destination
                )
            )
            if row is None:
                s.add(
                    Delivery(
                        study_id=study.id,
                        sop_instance_uid=sop_uid,
                        key=key,
                        destination=destination,
                        kind=kind,
                    )
                )
            else:
                row.key = key
                row.state = PENDING
                row.attempts = 0
                row.next_attempt_at = utcnow()
                row.last_error = None

        self.transaction(work)

    def due_deliveries(self, now: datetime | None = None, limit: int = 50) -> list[DeliveryRow]:
        with self.session() as s:
            rows = s.execute(
                select(Delivery, Study.study_instance_uid)
                .join(Study, Study.id == Delivery.study_id)
                .where(Delivery.state == PENDING, Delivery.next_attempt_at <= (now or utcnow()))
                .order_by(Delivery.next_attempt_at)
                .limit(limit)
            )
            return [delivery_row(d, uid) for d, uid in rows]

    def deliveries(self, states: Sequence[str] | None = None) -> list[DeliveryRow]:
        with self.session() as s:
            query = select(Delivery, Study.study_instance_uid).join(
                Study, Study.id == Delivery.study_id
            )
            if states:
                query = query.where(Delivery.state.in_(list(states)))
            rows = s.execute(query.order_by(Delivery.id))
            return [delivery_row(d, uid) for d, uid in rows]

    def results_delivered(self, study_uid: str) -> int:
        """How many of the study's SRs reached the PACS (the PACS counts them as its own)."""
        with self.session() as s:
            count = s.scalar(
                select(func.count(Delivery.id))
                .join(Study, Study.id == Delivery.study_id)
                .where(
                    Study.study_instance_uid == study_uid,
                    Delivery.state == DELIVERED,
                    ~Delivery.destination.startswith("hl7:"),
                )
            )
            return int(count or 0)

    def drop_dead_deliveries(self, ids: Sequence[int]) -> list[int]:
        """Delete the dead-lettered outbox rows among ``ids``; returns the ids deleted."""

        def work(s: Session) -> list[int]:
            chosen = select(Delivery).where(Delivery.id.in_(list(ids)), Delivery.state == DEAD)
            rows = list(s.scalars(chosen))
            for row in rows:
                s.delete(row)
            return [row.id for row in rows]

        return self.transaction(work)

    def mark_delivered(self, delivery_id: int) -> None:
        def work(s: Session) -> None:
            s.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id)
                .values(
                    state=DELIVERED,
                    delivered_at=utcnow(),
                    last_error=None,
                    attempts=Delivery.attempts + 1,
                )
            )

        self.transaction(work)

    def mark_attempt_failed(
        self, delivery_id: int, error: str, next_attempt_at: datetime, dead: bool
    ) -> None:
        def work(s: Session) -> None:
            s.execute(
                update(Delivery)
                .where(Delivery.id == delivery_id)
                .values(
                    state=DEAD if dead else PENDING,
                    last_error=error[:2000],
                    next_attempt_at=next_attempt_at,
                    attempts=Delivery.attempts + 1,
                )
            )

        self.transaction(work)

    # -- worklist --------------------------------------------------------------------------

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
                (shadow if r.role == "shadow" else findings).setdefault(r.study_id, []).append(
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
            )
            for st in studies
        ]
        rows.sort(key=lambda row: (row.rank, row.received_at, row.study_instance_uid))
        return rows

    def catalogued_keys(self, prefix: str = "") -> set[str]:
        with self.session() as s:
            return set(s.scalars(select(Instance.key).where(Instance.key.startswith(prefix))))

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

    def instance_count(self, study_uid: str) -> int:
        """How many instances of the study are stored and catalogued here."""
        with self.session() as s:
            count = s.scalar(
                select(func.count(Instance.id))
                .join(Series, Instance.series_id == Series.id)
                .join(Study, Series.study_id == Study.id)
                .where(Study.study_instance_uid == study_uid)
            )
            return int(count or 0)

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


def _delivery_state(states: set[str]) -> str | None:
    """One word for a study's outbox rows: the worst of them (dead, then pending)."""
    for state in (DEAD, PENDING, DELIVERED):
        if state in states:
            return state
    return None


def _details_json(res: ModelResult) -> str | None:
    details: dict[str, Any] = {}
    if res.lesion_volume_ml is not None:
        details["lesion_volume_ml"] = round(float(res.lesion_volume_ml), 4)
    if res.lesion_centre_lps is not None:
        details["lesion_centre_lps"] = [round(float(v), 2) for v in res.lesion_centre_lps]
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
