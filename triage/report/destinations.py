"""Where the objects of a report go, as the settings say: the outbox's destination names."""

from __future__ import annotations

from triage.config import Settings
from triage.receive.dicomweb import DESTINATION_PREFIX as DICOMWEB_PREFIX
from triage.report import hl7


def sr_destination(settings: Settings) -> str | None:
    """Where DICOM objects go: the DICOMweb root with TRIAGE_PACS_PROTOCOL=dicomweb, else
    TRIAGE_PACS (AE@host:port); None when neither is set (they stay in the store)."""
    if settings.pacs_protocol == "dicomweb":
        url = settings.dicomweb_url
        return f"{DICOMWEB_PREFIX}{url}" if url else None
    return str(settings.pacs) if settings.pacs is not None else None


def hl7_destination(settings: Settings) -> str | None:
    """Where the ORU^R01 messages go (TRIAGE_HL7_ENDPOINT), when set."""
    return hl7.destination(settings.hl7_endpoint) if settings.hl7_endpoint else None
