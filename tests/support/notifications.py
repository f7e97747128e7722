"""A node whose triage runs announce urgent findings: receive a small study, record a result
the way a triage run does (`support.reporting`), deliver the outbox."""

from __future__ import annotations

import io
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from support.factories import phantom_ct_series
from support.reporting import record_results
from triage.app.services import Services
from triage.catalogue import PENDING, Catalogue, DeliveryRow
from triage.config import Settings, load_settings
from triage.deliver.outbox import DeliverySummary, deliver_due
from triage.dimse import SUCCESS
from triage.receive.receiver import Receiver
from triage.results import ModelResult, Priority
from triage.store import open_store

PATIENT_ID, PATIENT_NAME, ACCESSION = "NOTIFY-PID-4711", "Doe^Jane", "ACC-NOTIFY-1"
SECRET = "s3cret-of-the-webhook"


class NotifyingNode:
    """Store, catalogue and settings of one node (``env``: its TRIAGE_* settings)."""

    def __init__(self, home: Path, **env: str) -> None:
        self.settings: Settings = load_settings(
            environ={
                "TRIAGE_HOME": str(home),
                "TRIAGE_DELIVERY_MAX_TRIES": "3",
                "TRIAGE_DELIVERY_BACKOFF_SECONDS": "10",
                **env,
            }
        )
        self.store = open_store(str(home / "store"))
        self.catalogue = Catalogue(self.settings.database_url)
        self.svc = Services(self.settings, self.store, self.catalogue)
        self.images: dict[str, list[Dataset]] = {}

    def receive(self, tag: str) -> str:
        """A small CT study of Jane Doe, received; its Study Instance UID."""
        images = phantom_ct_series(
            tag,
            shape=(16, 16, 2),
            patient_id=PATIENT_ID,
            patient_name=PATIENT_NAME,
            accession_number=ACCESSION,
            study_description="CT head without contrast",
        )
        receiver = Receiver(self.store, self.catalogue, "TRIAGE")
        for ds in images:
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            assert receiver.accept(buffer.getvalue()) == SUCCESS
        study = str(images[0].StudyInstanceUID)
        self.images[study] = images
        return study

    def triage(self, study: str, probability: float, *, again: bool = False) -> str:
        """Record an ICH detector's result on the study (``again``: a re-run); the SR's SOP
        Instance UID of the chain's released revision."""
        if again:
            assert self.catalogue.reopen(study)
        result = ModelResult(
            "ich-detector",
            "1.0.0",
            codes.SCT.IntracranialHemorrhage,
            probability,
            0.5,
            Priority.URGENT if probability >= 0.5 else Priority.ROUTINE,
            str(self.images[study][0].SeriesInstanceUID),
        )
        return record_results(self.svc, study, [result])

    def notify_rows(self) -> list[DeliveryRow]:
        return [r for r in self.catalogue.deliveries() if r.kind == "notify"]

    def deliver(self, *, all_pending: bool = False) -> DeliverySummary:
        """One delivery run; with all_pending, as if every waiting row were due now."""
        only = self.catalogue.deliveries([PENDING]) if all_pending else None
        return deliver_due(self.store, self.catalogue, self.settings, only=only)

    def close(self) -> None:
        self.catalogue.close()
