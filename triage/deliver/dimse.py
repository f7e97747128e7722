"""C-STORE: objects from the outbox to a DICOM node (``AE@host:port``), one association for
every due object of that node, TLS when TRIAGE_PACS_TLS says so."""

from __future__ import annotations

import ssl

from triage.catalogue import DeliveryRow
from triage.config import parse_node
from triage.deliver.objects import load_objects
from triage.dimse import is_success, store_datasets
from triage.errors import ConfigError, DeliveryError
from triage.store import ObjectStore


class DimseDestination:
    """``AE@host:port``: C-STORE to that node, calling as ``calling_ae``."""

    def __init__(
        self,
        store: ObjectStore,
        calling_ae: str,
        destination: str,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.store = store
        self.calling_ae = calling_ae
        self.destination = destination
        self.tls = tls

    def send(self, rows: list[DeliveryRow]) -> list[tuple[DeliveryRow, str | None]]:
        try:
            node = parse_node("destination", self.destination)
        except ConfigError:
            node = None
        if node is None:
            return [(row, f"destination {self.destination!r} is not AE@host:port") for row in rows]
        loaded, outcome = load_objects(self.store, rows)
        if not loaded:
            return outcome
        try:
            statuses = store_datasets(node, [ds for _, ds in loaded], self.calling_ae, tls=self.tls)
        except DeliveryError as exc:
            return outcome + [(row, str(exc)) for row, _ in loaded]
        for (row, _), status in zip(loaded, statuses, strict=True):
            ok = is_success(status)
            outcome.append((row, None if ok else f"{node} answered status 0x{status:04X}"))
        return outcome
