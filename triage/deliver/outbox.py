"""Deliver what the outbox holds, with retries and backoff; nothing is dropped.

A failed attempt is retried after base * 2**attempts seconds (capped at 5 minutes, with
jitter). After ``delivery_max_tries`` failures the item is *dead*: it stays in the outbox,
listed by ``triage outbox``, until an operator retries it.

Each outbox row names its destination: ``AE@host:port`` (C-STORE to a DICOM node),
``dicomweb:<url>`` (STOW-RS to a DICOMweb root), ``hl7:<host:port>`` (an HL7 v2 ORU^R01 over
MLLP), ``webhook:<url>`` or ``smtp:<host:port>`` (an urgent finding's notification); each kind
is a `Destination` (`deliver.dimse`, `deliver.stow`, `deliver.mllp`, `deliver.notify`). The
retries, backoff and dead letter are the same for each.
"""

from __future__ import annotations

import logging
import random
import ssl
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from triage.catalogue import DEAD, Catalogue, DeliveryRow, utcnow
from triage.config import Settings
from triage.deliver.dimse import DimseDestination
from triage.deliver.mllp import MllpDestination
from triage.deliver.notify import SmtpDestination, WebhookDestination
from triage.deliver.stow import StowDestination
from triage.receive.dicomweb import DESTINATION_PREFIX as DICOMWEB_PREFIX
from triage.receive.tls import sender_context
from triage.report.destinations import SMTP_PREFIX, WEBHOOK_PREFIX, shown_destination
from triage.report.hl7 import DESTINATION_PREFIX as HL7_PREFIX
from triage.store import ObjectStore

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 300.0


@dataclass
class DeliverySummary:
    delivered: int = 0
    retrying: int = 0
    dead: int = 0


def next_attempt(attempts: int, base_seconds: float, now: datetime | None = None) -> datetime:
    delay = min(base_seconds * 2**attempts, MAX_BACKOFF_SECONDS)
    return (now or utcnow()) + timedelta(seconds=delay * random.uniform(0.75, 1.25))


def deliver_due(
    store: ObjectStore,
    catalogue: Catalogue,
    settings: Settings,
    only: list[DeliveryRow] | None = None,
) -> DeliverySummary:
    """Try every due outbox item once (``only``: these rows, already claimed), one
    association per destination. The rows are claimed first: workers sharing the outbox never
    send the same row at once."""
    due = (
        only
        if only is not None
        else catalogue.claim_deliveries(settings.worker, settings.lease_seconds)
    )
    summary = DeliverySummary()
    by_destination: dict[str, list[DeliveryRow]] = defaultdict(list)
    for row in due:
        by_destination[row.destination].append(row)
    tls = sender_context(settings) if by_destination else None
    for destination, rows in by_destination.items():
        shown = shown_destination(destination)  # a webhook URL may carry a token
        for row, error in destination_for(store, settings, destination, tls).send(rows):
            if error is None:
                catalogue.mark_delivered(row.id)
                summary.delivered += 1
                continue
            dead = row.attempts + 1 >= settings.delivery_max_tries
            catalogue.mark_attempt_failed(
                row.id, error, next_attempt(row.attempts, settings.delivery_backoff_seconds), dead
            )
            if dead:
                summary.dead += 1
                log.error(
                    "delivery %d to %s is dead after %d tries: %s",
                    row.id,
                    shown,
                    row.attempts + 1,
                    error,
                )
            else:
                summary.retrying += 1
                log.warning(
                    "delivery %d to %s failed (try %d), will retry: %s",
                    row.id,
                    shown,
                    row.attempts + 1,
                    error,
                )
    return summary


class Destination(Protocol):
    """Where outbox rows go: one try for each row, an error (or None) per row."""

    def send(self, rows: list[DeliveryRow]) -> list[tuple[DeliveryRow, str | None]]: ...


def destination_for(
    store: ObjectStore,
    settings: Settings,
    destination: str,
    tls: ssl.SSLContext | None = None,
) -> Destination:
    """The destination an outbox row names: ``dicomweb:<url>`` (STOW-RS), ``hl7:<host:port>``
    (MLLP), ``webhook:<url>`` and ``smtp:<host:port>`` (notifications), else ``AE@host:port``
    (C-STORE)."""
    if destination.startswith(DICOMWEB_PREFIX):
        return StowDestination(store, settings, destination)
    if destination.startswith(HL7_PREFIX):
        return MllpDestination(store, destination)
    if destination.startswith(WEBHOOK_PREFIX):
        return WebhookDestination(store, settings, destination)
    if destination.startswith(SMTP_PREFIX):
        return SmtpDestination(store, settings, destination)
    return DimseDestination(store, settings.ae_title, destination, tls)


def retry_dead(catalogue: Catalogue) -> int:
    """Put every dead delivery back in the queue (after the operator fixed the PACS)."""
    rows = catalogue.deliveries([DEAD])
    for row in rows:
        catalogue.enqueue_delivery(
            row.study_instance_uid, row.sop_instance_uid, row.key, row.destination, row.kind
        )
    return len(rows)
