"""Receiving: what the receiver asks of the catalogue before it answers a C-STORE.

An instance is catalogued once; a new image re-opens a study that was triaged (state
receiving, generation + 1, so that a run that finishes on the older generation does not
overwrite the new one); the write waits for a locked database within a bound the sender's
DIMSE timeout allows (``RECORD_LOCK_WAIT_SECONDS``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import BindParameter, Table, bindparam, case, func, insert, null, select, update
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.exc import IntegrityError

from triage.catalogue.announced import note_counts
from triage.catalogue.database import Database
from triage.catalogue.rows import InstanceRecord
from triage.catalogue.tables import RECEIVING, Instance, Series, Study, utcnow
from triage.errors import StorageError

KNOWN_IDS_LIMIT = 20_000  # studies and series whose ids a receiver remembers


class _KnownIds:
    """Study and series ids by UID."""

    def __init__(self) -> None:
        self.studies: dict[str, int] = {}
        self.series: dict[str, int] = {}

    def remember(self, other: _KnownIds) -> None:
        for mine, theirs in ((self.studies, other.studies), (self.series, other.series)):
            if len(mine) > KNOWN_IDS_LIMIT:
                mine.clear()
            mine.update(theirs)


class Receiving(Database):
    """What the receiver records and asks: is an instance here, catalogue it, what is stored."""

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
        first seen through such an instance starts receiving like any other. The instance
        counts it announces are kept for the claim (`triage.catalogue.announced`).

        A locked or busy database is waited for, but ``record_lock_wait_seconds`` at most
        (RECORD_LOCK_WAIT_SECONDS, 8 s); then StorageError, which the receiver answers with
        0xA700 so that the sender retries. The bytes it stored stay in the store: the retry
        catalogues them, or the reconciliation after an unclean stop does.
        """
        return self.record_instances([rec])[0]

    def record_instances(self, recs: Sequence[InstanceRecord]) -> list[bool]:
        """Catalogue stored instances in one transaction, each as ``record_instance`` would
        one after the other; for each, False when it was already there. All or none: a
        StorageError means none of them was catalogued."""
        if not recs:
            return []
        deadline = time.monotonic() + self.record_lock_wait_seconds
        known = self._known_ids()
        for _ in range(5):
            try:
                outcome, learned = self.write(
                    lambda conn: _record(conn, recs, known), deadline=deadline
                )
            except IntegrityError:
                # another writer created the same study, series or instance at the same moment:
                # run again; it now finds their rows (and False if the instance itself was theirs)
                continue
            known.remember(learned)
            return outcome
        uids = ", ".join(r.sop_instance_uid for r in recs[:3])
        raise StorageError(f"catalogue write of {uids} kept conflicting; retry")

    def _known_ids(self) -> _KnownIds:
        """Ids of studies and series committed before (rows are never deleted or renumbered):
        the receiver's writes skip looking them up again."""
        known = self.__dict__.get("_receiving_ids")
        if known is None:
            known = self.__dict__.setdefault("_receiving_ids", _KnownIds())
        return known

    def catalogued_keys(self, prefix: str = "") -> set[str]:
        with self.session() as s:
            return set(s.scalars(select(Instance.key).where(Instance.key.startswith(prefix))))

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


# The statements of record_instances, built once (SQLAlchemy caches their compiled form)
_INSTANCES = cast(Table, Instance.__table__)
_STUDIES = cast(Table, Study.__table__)
_SERIES = cast(Table, Series.__table__)
_UIDS: BindParameter[list[str]] = bindparam("uids", expanding=True)
_PRESENT = select(_INSTANCES.c.sop_instance_uid).where(_INSTANCES.c.sop_instance_uid.in_(_UIDS))
_STUDY_IDS = select(_STUDIES.c.study_instance_uid, _STUDIES.c.id).where(
    _STUDIES.c.study_instance_uid.in_(_UIDS)
)
_SERIES_IDS = select(_SERIES.c.series_instance_uid, _SERIES.c.id).where(
    _SERIES.c.series_instance_uid.in_(_UIDS)
)
_REOPENS = _STUDIES.c.state != RECEIVING
# one statement, so the row's own values decide: an analysed image re-opens a study that is
# not receiving (generation + 1: a worker triaging the older generation is fenced off)
_ANALYSED_IMAGE = (
    update(_STUDIES)
    .where(_STUDIES.c.id == bindparam("study"))
    .values(
        last_instance_at=bindparam("now"),
        generation=case((_REOPENS, _STUDIES.c.generation + 1), else_=_STUDIES.c.generation),
        lease_expires=case((_REOPENS, null()), else_=_STUDIES.c.lease_expires),
        state=RECEIVING,
    )
)
_OTHER_INSTANCE = (
    update(_STUDIES)
    .where(_STUDIES.c.id == bindparam("study"), _STUDIES.c.state == RECEIVING)
    .values(last_instance_at=bindparam("now"))
)
_ROWS: BindParameter[list[int]] = bindparam("rows", expanding=True)
# locked: the instances of one study compare their announced counts with what the others
# announced one transaction after the other (PostgreSQL; SQLite writes one at a time anyway)
_STUDY_COUNTS = (
    select(_STUDIES.c.id, _STUDIES.c.announced_instances, _STUDIES.c.announced_counts_wrong)
    .where(_STUDIES.c.id.in_(_ROWS))
    .order_by(_STUDIES.c.id)
    .with_for_update()
)
_SERIES_COUNTS = select(_SERIES.c.id, _SERIES.c.announced_instances).where(_SERIES.c.id.in_(_ROWS))
_SET_STUDY_COUNTS = (
    update(_STUDIES)
    .where(_STUDIES.c.id == bindparam("row"))
    .values(announced_instances=bindparam("said"), announced_counts_wrong=bindparam("wrong"))
)
_SET_SERIES_COUNTS = (
    update(_SERIES)
    .where(_SERIES.c.id == bindparam("row"))
    .values(announced_instances=bindparam("said"))
)


@dataclass
class _Counts:
    """A study's or series' announced-count columns, as `note_counts` changes them."""

    announced_instances: int | None
    announced_counts_wrong: bool = False


def _record(
    conn: Connection, recs: Sequence[InstanceRecord], known: _KnownIds
) -> tuple[list[bool], _KnownIds]:
    """One try: what each record was (new or not), and the ids it found or made."""
    learned = _KnownIds()
    present = set(conn.scalars(_PRESENT, {"uids": list({r.sop_instance_uid for r in recs})}))
    outcome, new = [], []
    for r in recs:
        fresh = r.sop_instance_uid not in present
        outcome.append(fresh)
        if fresh:
            present.add(r.sop_instance_uid)
            new.append(r)
    if not new:
        return outcome, learned
    now = utcnow()
    studies = _studies(conn, new, now, known, learned)
    series = _series(conn, new, studies, known, learned)
    _note_counts(conn, new, studies, series)
    conn.execute(
        insert(_INSTANCES),
        [
            {
                "series_id": series[r.series_instance_uid],
                "sop_instance_uid": r.sop_instance_uid,
                "sop_class_uid": r.sop_class_uid,
                "transfer_syntax_uid": r.transfer_syntax_uid,
                "image_type": r.image_type,
                "frames": r.frames,
                "key": r.key,
                "size": r.size,
                "received_at": now,
            }
            for r in new
        ],
    )
    return outcome, learned


def _ids(
    conn: Connection, query: Any, wanted: dict[str, InstanceRecord], known: dict[str, int]
) -> dict[str, int]:
    ids = {uid: known[uid] for uid in wanted if uid in known}
    missing = [uid for uid in wanted if uid not in ids]
    if missing:
        ids.update({uid: row_id for uid, row_id in conn.execute(query, {"uids": missing})})
    return ids


def _studies(
    conn: Connection,
    new: list[InstanceRecord],
    now: datetime,
    known: _KnownIds,
    learned: _KnownIds,
) -> dict[str, int]:
    """Each study's id: its row created by its first instance, or its state and arrival time
    updated as record_instance says."""
    first: dict[str, InstanceRecord] = {}
    analysed: set[str] = set()
    for r in new:
        first.setdefault(r.study_instance_uid, r)
        if r.triage_input:
            analysed.add(r.study_instance_uid)
    ids = _ids(conn, _STUDY_IDS, first, known.studies)
    for uid, r in first.items():
        if uid not in ids:
            created = conn.execute(
                insert(_STUDIES),
                {
                    "study_instance_uid": uid,
                    "accession_number": r.accession_number,
                    "patient_id": r.patient_id,
                    "study_description": r.study_description,
                    "study_date": r.study_date,
                    "first_received_at": now,
                    "last_instance_at": now,
                    "state": RECEIVING,
                    "generation": 1,
                    "announced_counts_wrong": False,
                },
            )
            ids[uid] = _new_id(created)
        else:
            change = _ANALYSED_IMAGE if uid in analysed else _OTHER_INSTANCE
            conn.execute(change, {"study": ids[uid], "now": now})
    learned.studies.update(ids)
    return ids


def _series(
    conn: Connection,
    new: list[InstanceRecord],
    studies: dict[str, int],
    known: _KnownIds,
    learned: _KnownIds,
) -> dict[str, int]:
    """Each series' id, its row created from its first instance when new."""
    first: dict[str, InstanceRecord] = {}
    for r in new:
        first.setdefault(r.series_instance_uid, r)
    ids = _ids(conn, _SERIES_IDS, first, known.series)
    for uid, r in first.items():
        if uid not in ids:
            created = conn.execute(
                insert(_SERIES),
                {
                    "study_id": studies[r.study_instance_uid],
                    "series_instance_uid": uid,
                    "modality": r.modality,
                    "body_part": r.body_part,
                    "series_description": r.series_description,
                    "series_number": r.series_number,
                    "convolution_kernel": r.convolution_kernel,
                    "slice_thickness": r.slice_thickness,
                    "contrast_agent": r.contrast_agent,
                },
            )
            ids[uid] = _new_id(created)
    learned.series.update(ids)
    return ids


def _note_counts(
    conn: Connection,
    new: list[InstanceRecord],
    studies: dict[str, int],
    series: dict[str, int],
) -> None:
    """Keep the instance counts the new instances announced (`note_counts`, in their order),
    reading their studies' counts under the row lock."""
    counting = [r for r in new if r.triage_input or r.announced_study_instances is not None]
    if not counting:
        return
    study_ids = sorted({studies[r.study_instance_uid] for r in counting})
    series_ids = sorted({series[r.series_instance_uid] for r in counting})
    study_rows = {
        row_id: _Counts(said, bool(wrong))
        for row_id, said, wrong in conn.execute(_STUDY_COUNTS, {"rows": study_ids})
    }
    series_rows = {
        row_id: _Counts(said) for row_id, said in conn.execute(_SERIES_COUNTS, {"rows": series_ids})
    }
    before = {i: (c.announced_instances, c.announced_counts_wrong) for i, c in study_rows.items()}
    series_before = {i: c.announced_instances for i, c in series_rows.items()}
    for r in counting:
        note_counts(
            study_rows[studies[r.study_instance_uid]],
            series_rows[series[r.series_instance_uid]],
            r,
        )
    changed_studies = [
        {"row": i, "said": c.announced_instances, "wrong": c.announced_counts_wrong}
        for i, c in study_rows.items()
        if (c.announced_instances, c.announced_counts_wrong) != before[i]
    ]
    changed_series = [
        {"row": i, "said": c.announced_instances}
        for i, c in series_rows.items()
        if c.announced_instances != series_before[i]
    ]
    if changed_studies:
        conn.execute(_SET_STUDY_COUNTS, changed_studies)
    if changed_series:
        conn.execute(_SET_SERIES_COUNTS, changed_series)


def _new_id(created: CursorResult[Any]) -> int:
    key = created.inserted_primary_key
    assert key is not None
    return int(key[0])
