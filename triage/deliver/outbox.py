"""Deliver SRs from the outbox to the PACS, with retries and backoff; nothing is dropped.

A failed attempt is retried after base * 2**attempts seconds (capped at 5 minutes, with
jitter). After ``delivery_max_tries`` failures the item is *dead*: it stays in the outbox,
listed by ``triage outbox``, until an operator retries it.

Each outbox row names its destination: ``AE@host:port`` (C-STORE to a DICOM node),
``dicomweb:<url>`` (STOW-RS to a DICOMweb root) or ``hl7:<host:port>`` (an HL7 v2 ORU^R01 over
MLLP). The retries, backoff and dead letter are the same for each.
"""

from __future__ import annotations

import io
import logging
import random
import ssl
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

import pydicom

from triage.catalogue import DEAD, Catalogue, DeliveryRow, utcnow
from triage.config import Settings, parse_node
from triage.dimse import is_success, store_datasets
from triage.errors import ConfigError, DeliveryError, StorageError, TriageError
from triage.receive import dicomweb
from triage.receive.tls import sender_context
from triage.report import hl7
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
    """Try every due outbox item once, one association per destination."""
    due = only if only is not None else catalogue.due_deliveries()
    summary = DeliverySummary()
    by_destination: dict[str, list[DeliveryRow]] = defaultdict(list)
    for row in due:
        by_destination[row.destination].append(row)
    tls = sender_context(settings) if by_destination else None
    for destination, rows in by_destination.items():
        for row, error in _dispatch(store, settings, destination, rows, tls):
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
                    destination,
                    row.attempts + 1,
                    error,
                )
            else:
                summary.retrying += 1
                log.warning(
                    "delivery %d to %s failed (try %d), will retry: %s",
                    row.id,
                    destination,
                    row.attempts + 1,
                    error,
                )
    return summary


def _dispatch(
    store: ObjectStore,
    settings: Settings,
    destination: str,
    rows: list[DeliveryRow],
    tls: ssl.SSLContext | None = None,
) -> list[tuple[DeliveryRow, str | None]]:
    """One try for each row to one destination, by its kind; an error (or None) per row."""
    if destination.startswith(dicomweb.DESTINATION_PREFIX):
        return _stow(store, settings, destination.removeprefix(dicomweb.DESTINATION_PREFIX), rows)
    if destination.startswith(hl7.DESTINATION_PREFIX):
        return _send_hl7(store, destination.removeprefix(hl7.DESTINATION_PREFIX), rows)
    return _send(store, settings.ae_title, destination, rows, tls)


def _load_srs(
    store: ObjectStore, rows: list[DeliveryRow]
) -> tuple[list[tuple[DeliveryRow, pydicom.Dataset]], list[tuple[DeliveryRow, str | None]]]:
    """The SRs that can be read from the store, and an error for each that cannot."""
    loaded: list[tuple[DeliveryRow, pydicom.Dataset]] = []
    outcome: list[tuple[DeliveryRow, str | None]] = []
    for row in rows:
        try:
            ds = pydicom.dcmread(io.BytesIO(store.get(row.key)))
            if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:  # e.g. cut after its meta
                raise pydicom.errors.InvalidDicomError("it has no SOPClassUID or SOPInstanceUID")
            loaded.append((row, ds))
        except (StorageError, pydicom.errors.InvalidDicomError) as exc:
            outcome.append((row, f"cannot read the SR from the store: {exc}"))
    return loaded, outcome


def _send(
    store: ObjectStore,
    calling_ae: str,
    destination: str,
    rows: list[DeliveryRow],
    tls: ssl.SSLContext | None = None,
) -> list[tuple[DeliveryRow, str | None]]:
    try:
        node = parse_node("destination", destination)
        assert node is not None
    except (ConfigError, AssertionError):
        return [(row, f"destination {destination!r} is not AE@host:port") for row in rows]
    loaded, outcome = _load_srs(store, rows)
    if not loaded:
        return outcome
    try:
        statuses = store_datasets(node, [ds for _, ds in loaded], calling_ae, tls=tls)
    except DeliveryError as exc:
        return outcome + [(row, str(exc)) for row, _ in loaded]
    for (row, _), status in zip(loaded, statuses, strict=True):
        ok = is_success(status)
        outcome.append((row, None if ok else f"{node} answered status 0x{status:04X}"))
    return outcome


def _stow(
    store: ObjectStore, settings: Settings, url: str, rows: list[DeliveryRow]
) -> list[tuple[DeliveryRow, str | None]]:
    """STOW-RS to the DICOMweb root ``url``: one request per study."""
    loaded, outcome = _load_srs(store, rows)
    if not loaded:
        return outcome
    try:
        client = dicomweb.make_client(settings, url)
    except TriageError as exc:
        return outcome + [(row, str(exc)) for row, _ in loaded]
    errors = dicomweb.store_instances(client, [ds for _, ds in loaded])
    return outcome + [(row, error) for (row, _), error in zip(loaded, errors, strict=True)]


def _send_hl7(
    store: ObjectStore, endpoint: str, rows: list[DeliveryRow]
) -> list[tuple[DeliveryRow, str | None]]:
    """Each stored ORU^R01 over its own MLLP connection."""
    outcome: list[tuple[DeliveryRow, str | None]] = []
    for row in rows:
        try:
            hl7.send_message(endpoint, store.get(row.key))
        except StorageError as exc:
            outcome.append((row, f"cannot read the HL7 message from the store: {exc}"))
        except TriageError as exc:
            outcome.append((row, str(exc)))
        else:
            outcome.append((row, None))
    return outcome


def retry_dead(catalogue: Catalogue) -> int:
    """Put every dead delivery back in the queue (after the operator fixed the PACS)."""
    rows = catalogue.deliveries([DEAD])
    for row in rows:
        catalogue.enqueue_delivery(
            row.study_instance_uid, row.sop_instance_uid, row.key, row.destination, row.kind
        )
    return len(rows)
