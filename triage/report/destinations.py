"""Where the objects of a report go, as the settings say: the outbox's destination names."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from urllib.parse import urlsplit

from triage.catalogue import DeliveryRow
from triage.config import Settings
from triage.receive.dicomweb import DESTINATION_PREFIX as DICOMWEB_PREFIX
from triage.report import hl7

#: urgent-finding notifications: a signed JSON POST, and an e-mail through an SMTP server
WEBHOOK_PREFIX = "webhook:"
SMTP_PREFIX = "smtp:"


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


def notify_destinations(settings: Settings) -> list[str]:
    """Where an urgent finding is told to a person: ``webhook:<url>`` (TRIAGE_NOTIFY_WEBHOOK)
    and ``smtp:<host:port>`` (TRIAGE_NOTIFY_SMTP), those that are set."""
    out = []
    if settings.notify_webhook:
        out.append(f"{WEBHOOK_PREFIX}{settings.notify_webhook}")
    if settings.notify_smtp:
        out.append(f"{SMTP_PREFIX}{settings.notify_smtp}")
    return out


def shown_url(url: str) -> str:
    """A URL as it may be printed or logged: scheme, host and port only. Webhook services
    often carry their token in the path or the query, and a URL may hold user:password."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:  # a port that is no number: show none
        port = ""
    rest = "/..." if parts.path.strip("/") or parts.query or parts.fragment else ""
    return f"{parts.scheme}://{host}{port}{rest}"


def shown_destination(destination: str) -> str:
    """An outbox destination as `triage outbox list` prints it: a webhook without the parts of
    its URL that may be secret; every other kind as it is (AE@host:port, smtp:host:port)."""
    if destination.startswith(WEBHOOK_PREFIX):
        return WEBHOOK_PREFIX + shown_url(destination.removeprefix(WEBHOOK_PREFIX))
    return destination


def as_shown(rows: Sequence[DeliveryRow]) -> list[DeliveryRow]:
    """Outbox rows as they may be printed (`triage outbox list`, the web app): each destination
    as `shown_destination` writes it."""
    return [dataclasses.replace(r, destination=shown_destination(r.destination)) for r in rows]
