"""Claims on work shared by many workers: a study to triage, leased to one worker at a time.

A study is claimable once it is complete: quiet for the quiet period, or with every instance
its senders announced (`triage.catalogue.announced`).

A claim moves a study to ``triaging`` and gives the claimant a lease (``worker``,
``lease_expires``) that it renews while it works (`renew_lease`). A worker that dies stops
renewing; when its lease has expired, the next claim takes the study over on a new
generation. The generation is the fence: the dead (or only slow) worker's result, recorded
with the old generation, is refused (`Studies.finish_triage`), so a study gets one result and
one SR however its workers fail. On PostgreSQL the claimants skip the rows another is locking
(``FOR UPDATE SKIP LOCKED``); on SQLite writes are serialised anyway. Either way the claim's
conditional update decides: one claimant wins a study.

A worker that restarts on the same machine does not wait for its old leases to expire: those
of a process on this host that no longer runs (studies and outbox rows) are released at once
(`release_dead_leases`). The outbox's own claims are ``outbox.py``'s.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from triage.catalogue.announced import complete_as_announced
from triage.catalogue.database import Database
from triage.catalogue.tables import (
    PENDING,
    RECEIVING,
    TRIAGING,
    Delivery,
    Study,
    study_row,
    utcnow,
)
from triage.config import default_worker_name

log = logging.getLogger(__name__)

#: how long a claim holds without renewal (TRIAGE_LEASE_SECONDS); workers renew a third of it
DEFAULT_LEASE_SECONDS = 60.0


@dataclass(frozen=True)
class Claim:
    study_instance_uid: str
    generation: int
    #: the worker whose expired lease this claim took over (None: a fresh claim)
    taken_from: str | None = None


class Claims(Database):
    """Claiming studies for triage, renewing and releasing the leases."""

    def claim_next(
        self,
        worker: str,
        quiet_seconds: float,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        now: datetime | None = None,
        *,
        on_announced_count: bool = True,
    ) -> Claim | None:
        """The oldest study that is quiet (no instance for ``quiet_seconds``), complete as
        its senders announced (``on_announced_count``, TRIAGE_COMPLETE_ON_ANNOUNCED_COUNT:
        `triage.catalogue.announced`) or whose worker's lease expired, claimed for
        ``worker``; None when there is none."""

        def work(s: Session) -> Claim | None:
            at = now or utcnow()
            cutoff = at - timedelta(seconds=quiet_seconds)
            claimable = [
                and_(Study.state == RECEIVING, Study.last_instance_at <= cutoff),
                and_(Study.state == TRIAGING, Study.lease_expires < at),
            ]
            if on_announced_count:
                claimable.append(complete_as_announced())
            candidates = (
                select(Study)
                .where(or_(*claimable))
                .order_by(Study.last_instance_at)
                .limit(4)
                .with_for_update(skip_locked=True)
            )
            for study in s.scalars(candidates):
                claim = _claim(s, study, worker, lease_seconds, at)
                if claim is not None:
                    return claim
            return None

        return self.transaction(work)

    def claim_for_triage(
        self,
        study_uid: str,
        quiet_seconds: float | None = None,
        *,
        worker: str = "",
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> int | None:
        """Claim one study (known complete, or re-run); returns its generation, or None when
        another worker holds it (or, with ``quiet_seconds``, it is not quiet yet)."""

        def work(s: Session) -> int | None:
            at = utcnow()
            study = study_row(s, study_uid)
            if study is None or (study.state == TRIAGING and not _expired(study, at)):
                return None
            if quiet_seconds is not None:
                cutoff = at - timedelta(seconds=quiet_seconds)
                if study.state != RECEIVING or study.last_instance_at > cutoff:
                    return None
            claim = _claim(s, study, worker or default_worker_name(), lease_seconds, at)
            return None if claim is None else claim.generation

        return self.transaction(work)

    def renew_lease(
        self,
        study_uid: str,
        generation: int,
        worker: str,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> bool:
        """Extend the worker's claim; False when it is no longer the worker's (taken over
        after expiry, or new images started a new generation)."""

        def work(s: Session) -> bool:
            result = s.execute(
                update(Study)
                .where(
                    Study.study_instance_uid == study_uid,
                    Study.generation == generation,
                    Study.state == TRIAGING,
                    Study.worker == worker,
                )
                .values(lease_expires=utcnow() + timedelta(seconds=lease_seconds))
            )
            return result.rowcount == 1  # type: ignore[attr-defined]

        return self.transaction(work)

    def release_dead_leases(self) -> list[str]:
        """Expire now the leases (on studies and outbox rows) of workers of this host whose
        process is gone (a restart after a crash); returns the studies released."""
        prefix = f"{socket.gethostname()}:"

        def dead(worker: str | None) -> bool:
            pid = (worker or "").removeprefix(prefix)
            return pid.isdigit() and not _running(int(pid))

        def work(s: Session) -> list[str]:
            past = utcnow() - timedelta(seconds=1)
            held = s.scalars(
                select(Study).where(Study.state == TRIAGING, Study.worker.startswith(prefix))
            )
            released = []
            for study in held:
                if dead(study.worker):
                    study.lease_expires = past
                    released.append(study.study_instance_uid)
            sending = s.scalars(
                select(Delivery).where(
                    Delivery.state == PENDING, Delivery.lease_owner.startswith(prefix)
                )
            )
            for row in sending:
                if dead(row.lease_owner):
                    row.lease_expires = past
            return released

        return self.transaction(work)


def _expired(study: Study, at: datetime) -> bool:
    return study.lease_expires is None or study.lease_expires < at


def _claim(
    s: Session, study: Study, worker: str, lease_seconds: float, at: datetime
) -> Claim | None:
    """Claim ``study`` in this transaction; a study triaging under an expired lease is taken
    over on a new generation (the fence against its old worker)."""
    taken_from = study.worker if study.state == TRIAGING else None
    generation = study.generation + 1 if study.state == TRIAGING else study.generation
    result = s.execute(
        update(Study)
        .where(
            Study.id == study.id,
            Study.generation == study.generation,
            Study.state == study.state,
        )
        .values(
            state=TRIAGING,
            generation=generation,
            worker=worker,
            lease_expires=at + timedelta(seconds=lease_seconds),
        )
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    if taken_from is not None:
        log.warning(
            "study %s: the lease of worker %s expired; %s takes it over",
            study.study_instance_uid,
            taken_from,
            worker,
        )
    return Claim(study.study_instance_uid, generation, taken_from)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it runs
        return True
    return True
