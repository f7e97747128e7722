"""The outbox: each object to send and where, until delivered or dead-lettered.

The delivery loop (``triage.deliver``) claims what is due and marks each try; an object put in
again (the same SOP instance to the same destination) is reset to pending, not duplicated. A
claim is a lease, as for a study (``claims.py``): workers sharing the outbox never try the same
row at once, and a row whose worker died is due again when its lease expires.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from triage.catalogue.database import Database
from triage.catalogue.rows import DeliveryRow, delivery_row
from triage.catalogue.tables import DEAD, DELIVERED, PENDING, Delivery, Study, study_row, utcnow
from triage.errors import StorageError


class Outbox(Database):
    """The objects waiting to go to the PACS or the RIS, and how each try went."""

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
                row.lease_owner = row.lease_expires = None

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

    def claim_deliveries(
        self,
        owner: str,
        lease_seconds: float,
        limit: int = 50,
        study_uid: str | None = None,
        now: datetime | None = None,
    ) -> list[DeliveryRow]:
        """The due rows (of one study, or all), oldest first, leased to ``owner``: no other
        worker tries them until the lease expires or the try is marked."""

        def work(s: Session) -> list[DeliveryRow]:
            at = now or utcnow()
            query = (
                select(Delivery, Study.study_instance_uid)
                .join(Study, Study.id == Delivery.study_id)
                .where(
                    Delivery.state == PENDING,
                    Delivery.next_attempt_at <= at,
                    or_(Delivery.lease_expires.is_(None), Delivery.lease_expires < at),
                )
                .order_by(Delivery.next_attempt_at)
                .limit(limit)
                .with_for_update(of=Delivery, skip_locked=True)
            )
            if study_uid is not None:
                query = query.where(Study.study_instance_uid == study_uid)
            claimed = []
            for row, uid in s.execute(query):
                result = s.execute(
                    update(Delivery)
                    .where(
                        Delivery.id == row.id,
                        or_(Delivery.lease_expires.is_(None), Delivery.lease_expires < at),
                    )
                    .values(lease_owner=owner, lease_expires=at + timedelta(seconds=lease_seconds))
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    claimed.append(delivery_row(row, uid))
            return claimed

        return self.transaction(work)

    def deliveries(
        self, states: Sequence[str] | None = None, study_uid: str | None = None
    ) -> list[DeliveryRow]:
        with self.session() as s:
            query = select(Delivery, Study.study_instance_uid).join(
                Study, Study.id == Delivery.study_id
            )
            if study_uid is not None:
                query = query.where(Study.study_instance_uid == study_uid)
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
                    Delivery.kind != "notify",  # a notification is not a result in the PACS
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
                    lease_owner=None,
                    lease_expires=None,
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
                    lease_owner=None,
                    lease_expires=None,
                )
            )

        self.transaction(work)
