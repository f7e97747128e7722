"""Urgent findings told to a person: what the notification of an urgent result says, and its
outbox rows beside the result's SR.

An active model's URGENT result is announced on every channel the settings name: a signed JSON
POST (TRIAGE_NOTIFY_WEBHOOK) and an e-mail (TRIAGE_NOTIFY_SMTP); sending is `triage.deliver.
notify`. The notification belongs to the result's revision: it is built and stored with the SR
(``results/<study>/<SR UID>.notify.json``, one payload for both channels) and goes to the
outbox when the revision is released. The same result is never a new revision, so it is never
announced twice; a changed result that is still urgent is announced again, as the new result.

What it holds: the study's accession number, description and modality, the finding, the
probability and the model's threshold, the model and its version, the priority, the link to the
study's page in the web app, the SR's SOP Instance UID (unique per result: receivers drop a
second copy) and when the result was made; the e-mail's subject and text. The patient's name
only with TRIAGE_NOTIFY_PATIENT_NAME=true; the patient ID never.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydicom.dataset import Dataset
from pydicom.valuerep import PersonName

from triage.attributes import readable_text
from triage.catalogue import Outgoing
from triage.config import Settings
from triage.errors import TriageError
from triage.report.destinations import notify_destinations
from triage.results import ModelResult, Priority, Role
from triage.store import ObjectStore

KIND = "notify"
EVENT = "urgent finding"
#: the payload's layout; a receiver can tell a later, changed one
PAYLOAD_VERSION = 1
PRELIMINARY = (
    "This is an automated AI triage result, not reviewed by a radiologist. "
    "Open the study and read the images."
)


@dataclass(frozen=True)
class Notification:
    """One urgent result, in the words a person reads it in."""

    sr_sop_instance_uid: str
    study_instance_uid: str
    accession_number: str
    study_description: str
    modality: str
    finding: str
    finding_code: tuple[str, str, str]  # (value, coding scheme, code meaning)
    probability: float
    threshold: float
    model_name: str
    model_version: str
    priority: str
    study_page: str
    made_at: datetime
    patient_name: str | None = None

    @property
    def subject(self) -> str:
        """E.g. "URGENT: Intracranial hemorrhage suspected, accession A123"."""
        accession = f", accession {self.accession_number}" if self.accession_number else ""
        return _one_line(f"{self.priority.upper()}: {self.finding} suspected{accession}")

    @property
    def text(self) -> str:
        """The e-mail's plain-text body."""
        modality = f"({self.modality})" if self.modality else ""
        study = " ".join(v for v in (self.study_description, modality) if v)
        lines = [
            self.subject,
            "",
            f"Finding:      {self.finding}",
            f"Probability:  {self.probability:.2f} (the model's threshold: {self.threshold:.2f})",
            f"Study:        {study or '(no description)'}",
            f"Accession:    {self.accession_number or '(none)'}",
            *(
                [f"Patient:      {self.patient_name or '(none)'}"]
                if self.patient_name is not None
                else []
            ),
            f"Model:        {self.model_name} {self.model_version}",
            f"Result made:  {self.made_at.isoformat(timespec='seconds')}",
            "",
            f"Open the study: {self.study_page}",
            "",
            PRELIMINARY,
            f"Result SR: {self.sr_sop_instance_uid}",
        ]
        return "\n".join(lines) + "\n"

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON body (and what the e-mail is sent from)."""
        out: dict[str, Any] = {
            "event": EVENT,
            "version": PAYLOAD_VERSION,
            "priority": self.priority,
            "finding": self.finding,
            "finding_code": dict(
                zip(("value", "scheme", "meaning"), self.finding_code, strict=True)
            ),
            "probability": round(self.probability, 4),
            "threshold": self.threshold,
            "model": self.model_name,
            "model_version": self.model_version,
            "accession_number": self.accession_number,
            "study_description": self.study_description,
            "modality": self.modality,
            "study_instance_uid": self.study_instance_uid,
            "study_page": self.study_page,
            "sr_sop_instance_uid": self.sr_sop_instance_uid,
            "time": self.made_at.isoformat(timespec="seconds"),
            "preliminary": True,
            "subject": self.subject,
            "text": self.text,
        }
        if self.patient_name is not None:
            out["patient_name"] = self.patient_name
        return out


def is_urgent(result: ModelResult | None) -> bool:
    """Whether a result is announced: an active model's URGENT result."""
    return result is not None and result.role == Role.ACTIVE and result.priority is Priority.URGENT


def notification_of(
    settings: Settings,
    header: Dataset,
    result: ModelResult,
    sr_sop_instance_uid: str,
    made_at: datetime,
) -> Notification:
    """The notification of a result on the study ``header`` belongs to (a source image's
    header: its modality, not the SR's); ``made_at``: the revision's time (naive is local)."""
    study_uid = readable_text(header, "StudyInstanceUID")
    if not study_uid:
        raise TriageError('Argument "header" must have a StudyInstanceUID.')
    return Notification(
        sr_sop_instance_uid=sr_sop_instance_uid,
        study_instance_uid=study_uid,
        accession_number=_one_line(readable_text(header, "AccessionNumber")),
        study_description=_one_line(readable_text(header, "StudyDescription")),
        modality=_one_line(readable_text(header, "Modality")),
        finding=_without_semantic_tag(_one_line(str(result.finding.meaning))),
        finding_code=(
            str(result.finding.value),
            str(result.finding.scheme_designator),
            str(result.finding.meaning),
        ),
        probability=float(result.probability),
        threshold=float(result.threshold),
        model_name=result.model_name,
        model_version=result.model_version,
        priority=result.priority.value,
        study_page=f"{settings.web_address}/studies/{study_uid}",
        made_at=made_at.astimezone(),
        patient_name=_patient_name(header) if settings.notify_patient_name else None,
    )


def notification_key(study_uid: str, sr_sop_instance_uid: str) -> str:
    return f"results/{study_uid}/{sr_sop_instance_uid}.notify.json"


def notification_objects(
    store: ObjectStore,
    settings: Settings,
    header: Dataset,
    result: ModelResult | None,
    sr_sop_instance_uid: str,
    made_at: datetime,
) -> list[Outgoing]:
    """The outbox rows of a revision's notification, one per channel that is set, its payload
    stored; none for a result that is not urgent, or when no channel is set."""
    destinations = notify_destinations(settings)
    if result is None or not is_urgent(result) or not destinations:
        return []
    notification = notification_of(settings, header, result, sr_sop_instance_uid, made_at)
    key = notification_key(notification.study_instance_uid, sr_sop_instance_uid)
    store.put(key, encode_payload(notification.payload()))
    return [Outgoing(sr_sop_instance_uid, key, d, KIND) for d in destinations]


def encode_payload(payload: dict[str, Any]) -> bytes:
    """The payload as stored and sent: these bytes are what the webhook's signature signs."""
    return json.dumps(payload, ensure_ascii=False, indent=2).encode("utf-8")


def _patient_name(header: Dataset) -> str:
    """The name as people write it ("DOE, Jane"), from the DICOM PN (family^given^...)."""
    text = readable_text(header, "PatientName")
    if not text:
        return ""
    name = PersonName(text)
    family, given = str(name.family_name), str(name.given_name)
    return _one_line(f"{family}, {given}" if family and given else family or given or text)


def _without_semantic_tag(meaning: str) -> str:
    """ "Intracranial hemorrhage (disorder)" as people say it: SNOMED CT's fully specified
    names end in a tag for the kind of concept."""
    return re.sub(r"\s+\((disorder|finding|morphologic abnormality)\)$", "", meaning)


def _one_line(text: str) -> str:
    """Header-safe text: an attribute's line breaks must not end an e-mail header."""
    return " ".join(text.split())
