"""What the node reported to the PACS: the revisions of each model's result document on a
study, which of them are held back (a downgrade waiting for a person), and the acknowledgements.

A revision row is written in the same transaction as the triage run's outcome, so a stale run
(an older generation) can neither add one nor put one in the outbox. A revision is ``released``
(its objects are in the outbox), ``held`` (it would lower the study's priority: it waits for
`triage ack`) or ``discarded`` (held, then overtaken by a newer result before anyone
acknowledged it; never sent).

Functions that take the caller's session, so that they run inside its transaction
(``Studies.finish_triage`` and ``Studies.acknowledge``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from triage.catalogue.rows import AcknowledgementRow, ChainHead, NewRevision, acknowledgement_row
from triage.catalogue.tables import (
    Acknowledgement,
    Delivery,
    ReportRevision,
    RevisionState,
    Study,
    utcnow,
)


def chain_heads(s: Session, study_id: int) -> dict[str, ChainHead]:
    """Every chain of the study, by name."""
    rows = list(
        s.scalars(
            select(ReportRevision)
            .where(ReportRevision.study_id == study_id)
            .order_by(ReportRevision.chain, ReportRevision.number)
        )
    )
    heads: dict[str, ChainHead] = {}
    for chain in {r.chain for r in rows}:
        mine = [r for r in rows if r.chain == chain]
        latest = mine[-1]
        released = [r for r in mine if r.state == RevisionState.RELEASED]
        last = released[-1] if released else None
        heads[chain] = ChainHead(
            chain=chain,
            latest_number=latest.number,
            latest_fingerprint=latest.fingerprint,
            latest_state=latest.state,
            released_number=last.number if last else None,
            released_fingerprint=last.fingerprint if last else None,
            released_sr_sop_instance_uid=last.sr_sop_instance_uid if last else None,
            released_sr_series_instance_uid=last.sr_series_instance_uid if last else None,
            released_priority=last.priority if last else None,
        )
    return heads


def has_released(s: Session, study_id: int) -> bool:
    """Whether anything of the study reached the outbox (what the PACS shows is then known)."""
    return (
        s.scalar(
            select(ReportRevision.id).where(
                ReportRevision.study_id == study_id,
                ReportRevision.state == RevisionState.RELEASED,
            )
        )
        is not None
    )


def add_revisions(
    s: Session,
    study: Study,
    revisions: Sequence[NewRevision],
    current: dict[str, str],
    *,
    hold: bool,
) -> None:
    """Record the run's new revisions, held or released (released: into the outbox).

    Only the newest held revision of a chain can be released later: an older held one is
    discarded, and so is every held one of a chain whose current result (``current``: chain ->
    fingerprint) is the one already released. A held revision that is still the current result
    goes out as soon as the run is no longer a downgrade.
    """
    now = utcnow()
    for new in revisions:
        _discard_held(s, study.id, new.chain)
        row = ReportRevision(
            study_id=study.id,
            chain=new.chain,
            number=new.number,
            fingerprint=new.fingerprint,
            priority=new.priority,
            model_version=new.model_version,
            sr_sop_instance_uid=new.sr_sop_instance_uid,
            sr_series_instance_uid=new.sr_series_instance_uid,
            predecessor_sop_instance_uid=new.predecessor_sop_instance_uid,
            state=RevisionState.HELD if hold else RevisionState.RELEASED,
            objects=json.dumps(
                [[o.sop_instance_uid, o.key, o.destination, o.kind] for o in new.objects]
            ),
            generation=study.generation,
            created_at=now,
        )
        s.add(row)
        if not hold:
            _release(s, study, row, now)
    s.flush()
    heads = chain_heads(s, study.id)
    for chain, fingerprint in current.items():
        head = heads.get(chain)
        if head is None:
            continue
        if head.released_fingerprint == fingerprint:
            _discard_held(s, study.id, chain)
        elif not hold and head.latest_state == RevisionState.HELD:
            # held before, no longer a downgrade (or holding was switched off): it goes now
            for row in held_revisions(s, study.id):
                if row.chain == chain:
                    _release(s, study, row, now)


def held_revisions(s: Session, study_id: int) -> list[ReportRevision]:
    return list(
        s.scalars(
            select(ReportRevision)
            .where(
                ReportRevision.study_id == study_id,
                ReportRevision.state == RevisionState.HELD,
            )
            .order_by(ReportRevision.chain, ReportRevision.number)
        )
    )


def release_held(s: Session, study: Study, *, who: str, reason: str) -> AcknowledgementRow | None:
    """A person accepts the lower priority: the held revisions go to the outbox, the study takes
    the priority they say, and the acknowledgement is recorded. None when nothing was held."""
    held = held_revisions(s, study.id)
    if not held or study.held_priority is None:
        return None
    now = utcnow()
    newest: dict[str, ReportRevision] = {}
    for row in held:  # the newest held revision of each chain is the current result
        newest[row.chain] = row
    for row in held:
        if newest[row.chain] is row:
            _release(s, study, row, now)
        else:
            row.state = RevisionState.DISCARDED
    ack = Acknowledgement(
        study_id=study.id,
        at=now,
        who=who.strip()[:128],
        reason=reason.strip(),
        from_priority=study.priority or "",
        to_priority=study.held_priority,
    )
    s.add(ack)
    study.priority = study.held_priority
    study.held_priority = None
    return acknowledgement_row(ack, study.study_instance_uid)


def acknowledgements(s: Session) -> list[AcknowledgementRow]:
    rows = s.execute(
        select(Acknowledgement, Study.study_instance_uid)
        .join(Study, Study.id == Acknowledgement.study_id)
        .order_by(Acknowledgement.id)
    )
    return [acknowledgement_row(a, uid) for a, uid in rows]


def _release(s: Session, study: Study, row: ReportRevision, now: datetime) -> None:
    row.state = RevisionState.RELEASED
    row.released_at = now
    for sop_uid, key, destination, *kind in json.loads(row.objects):
        s.add(
            Delivery(
                study_id=study.id,
                sop_instance_uid=sop_uid,
                key=key,
                destination=destination,
                kind=kind[0] if kind else "sr",
            )
        )


def _discard_held(s: Session, study_id: int, chain: str) -> None:
    for row in s.scalars(
        select(ReportRevision).where(
            ReportRevision.study_id == study_id,
            ReportRevision.chain == chain,
            ReportRevision.state == RevisionState.HELD,
        )
    ):
        row.state = RevisionState.DISCARDED
