"""Urgent-finding notifications from the outbox: a signed JSON POST to a webhook, and an e-mail
through an SMTP server. The payload is the one `triage.report.notification` stored with the SR.

**Webhook** (``webhook:<url>``, TRIAGE_NOTIFY_WEBHOOK): one POST per notification of the stored
bytes, ``Content-Type: application/json; charset=utf-8``, and

    X-Triage-Signature: sha256=<hex HMAC-SHA256 of the exact body, key TRIAGE_NOTIFY_WEBHOOK_SECRET>

(the scheme of GitHub's ``X-Hub-Signature-256``). There is no timestamp header: the body is
stored once, so every try sends the same bytes with the same signature, and it says when the
result was made (``time``). A receiver computes the HMAC of the raw body, compares it in
constant time, and ignores an ``sr_sop_instance_uid`` it has seen (a retry after a lost answer,
or a replay). A 2xx answer is delivered; a redirect is not followed (a signed message goes only
where it is configured to); any other answer, no answer within 10 s, or no connection is a failed
try, retried with backoff and dead-lettered like every outbox row. HTTPS is verified against
TRIAGE_TLS_CA when set, else the CAs requests trusts.

**E-mail** (``smtp:<host:port>``, TRIAGE_NOTIFY_SMTP): one connection per delivery run, STARTTLS
unless TRIAGE_NOTIFY_SMTP_STARTTLS=false (verified against TRIAGE_TLS_CA when set, else the
system's CAs), a login when TRIAGE_NOTIFY_SMTP_USER is set, then one message per notification
from TRIAGE_NOTIFY_FROM to TRIAGE_NOTIFY_TO. Its Message-ID derives from the SR's SOP Instance
UID, so a message sent again after a lost answer is recognisably the same one.

Errors name the server and what to check; a webhook's URL is shown without its path, query and
credentials (`triage.report.destinations.shown_url`), as `triage outbox list` shows it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import ssl
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import requests

from triage import __version__
from triage.catalogue import DeliveryRow
from triage.config import Settings
from triage.errors import ConfigError, StorageError
from triage.report.destinations import SMTP_PREFIX, WEBHOOK_PREFIX, shown_url
from triage.store import ObjectStore

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10.0
SIGNATURE_HEADER = "X-Triage-Signature"

Outcome = list[tuple[DeliveryRow, str | None]]


def signature(secret: str, body: bytes) -> str:
    """The X-Triage-Signature value of a body: ``sha256=`` and the hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class WebhookDestination:
    """``webhook:<url>``: each notification as a signed JSON POST."""

    def __init__(self, store: ObjectStore, settings: Settings, destination: str) -> None:
        self.store = store
        self.settings = settings
        self.url = destination.removeprefix(WEBHOOK_PREFIX)
        self.shown = shown_url(self.url)

    def send(self, rows: list[DeliveryRow]) -> Outcome:
        try:
            secret = self.settings.secret("notify_webhook_secret")
        except ConfigError as exc:
            return [(row, str(exc)) for row in rows]
        if not secret:
            unsigned = (
                "TRIAGE_NOTIFY_WEBHOOK_SECRET (or _FILE) is not set: webhook messages are "
                "signed with it"
            )
            return [(row, unsigned) for row in rows]
        verify: str | bool = str(self.settings.tls_ca) if self.settings.tls_ca else True
        outcome: Outcome = []
        with requests.Session() as session:
            for row in rows:
                try:
                    body = self.store.get(row.key)
                except StorageError as exc:
                    outcome.append((row, f"cannot read the notification from the store: {exc}"))
                    continue
                outcome.append((row, self._post(session, body, secret, verify)))
        return outcome

    def _post(
        self, session: requests.Session, body: bytes, secret: str, verify: str | bool
    ) -> str | None:
        """One try: None when the receiver took it (2xx), else what went wrong."""
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            SIGNATURE_HEADER: signature(secret, body),
            "User-Agent": f"triage/{__version__}",
        }
        try:
            answer = session.post(
                self.url,
                data=body,
                headers=headers,
                timeout=TIMEOUT_SECONDS,
                allow_redirects=False,
                verify=verify,
            )
        except requests.Timeout:
            return f"the webhook at {self.shown} did not answer within {TIMEOUT_SECONDS:g} s"
        except requests.exceptions.SSLError as exc:
            return (
                f"no TLS connection to the webhook at {self.shown} ({_cause(exc)}): is "
                "TRIAGE_TLS_CA the CA that signed its certificate?"
            )
        except requests.ConnectionError as exc:
            return (
                f"cannot reach the webhook at {self.shown} ({_cause(exc)}): is it listening, "
                "and is TRIAGE_NOTIFY_WEBHOOK right?"
            )
        except requests.RequestException as exc:  # its text may hold the whole URL
            return f"cannot post to the webhook at {self.shown}: {type(exc).__name__}"
        with answer:
            if 200 <= answer.status_code < 300:
                return None
            what = f"HTTP {answer.status_code} {answer.reason or ''}".strip()
            if answer.status_code in (401, 403):
                what += " (does it have the same TRIAGE_NOTIFY_WEBHOOK_SECRET?)"
            elif 300 <= answer.status_code < 400:
                what += " (a redirect, not followed: give the final URL)"
            return f"the webhook at {self.shown} answered {what}"


def _cause(exc: BaseException) -> str:
    """The innermost reason of a requests error in words (e.g. "Connection refused"), without
    the URL that requests and urllib3 put in their own messages."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {current.verify_message}"
        if isinstance(current, ssl.SSLError):
            return str(current.reason or "TLS error")
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        current = current.__cause__ or current.__context__
    return type(exc).__name__


class SmtpDestination:
    """``smtp:<host:port>``: each notification as an e-mail, over one SMTP connection."""

    def __init__(self, store: ObjectStore, settings: Settings, destination: str) -> None:
        self.store = store
        self.settings = settings
        self.endpoint = destination.removeprefix(SMTP_PREFIX)

    def send(self, rows: list[DeliveryRow]) -> Outcome:
        if not self.settings.notify_from or not self.settings.notify_to:
            unaddressed = "TRIAGE_NOTIFY_FROM and TRIAGE_NOTIFY_TO are needed to send e-mail"
            return [(row, unaddressed) for row in rows]
        outcome: dict[int, str | None] = {}
        messages: list[tuple[DeliveryRow, EmailMessage]] = []
        for row in rows:
            try:
                payload = json.loads(self.store.get(row.key))
                messages.append((row, self.message(payload)))
            except (StorageError, ValueError, KeyError, TypeError) as exc:
                outcome[row.id] = f"cannot read the notification from the store: {exc}"
        if messages:
            try:
                self._send_all(messages, outcome)
            except ConfigError as exc:
                for row, _ in messages:
                    outcome.setdefault(row.id, str(exc))
            except (OSError, smtplib.SMTPException) as exc:  # SMTPException is an OSError too
                error = self._error(exc)
                for row, _ in messages:
                    outcome.setdefault(row.id, error)
        return [(row, outcome.get(row.id)) for row in rows]

    def message(self, payload: dict[str, Any]) -> EmailMessage:
        """The e-mail of a stored notification."""
        sender = self.settings.notify_from
        message = EmailMessage()
        message["From"] = sender
        message["To"] = ", ".join(self.settings.notify_to)
        message["Subject"] = str(payload["subject"])
        message["Date"] = format_datetime(datetime.now().astimezone())
        domain = sender.rpartition("@")[2] or "triage.invalid"
        message["Message-ID"] = f"<{payload['sr_sop_instance_uid']}.notify@{domain}>"
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to it
        message.set_content(str(payload["text"]))
        return message

    def _send_all(
        self, messages: list[tuple[DeliveryRow, EmailMessage]], outcome: dict[int, str | None]
    ) -> None:
        host, _, port = self.endpoint.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"SMTP server {self.endpoint!r} is not host:port")
        with smtplib.SMTP(host, int(port), timeout=TIMEOUT_SECONDS) as smtp:
            smtp.ehlo()
            if self.settings.notify_smtp_starttls:
                smtp.starttls(context=self._tls())
                smtp.ehlo()
            if self.settings.notify_smtp_user:
                smtp.login(
                    self.settings.notify_smtp_user, self.settings.secret("notify_smtp_password")
                )
            for row, message in messages:
                try:
                    refused = smtp.send_message(message)
                except (
                    smtplib.SMTPRecipientsRefused,
                    smtplib.SMTPSenderRefused,
                    smtplib.SMTPDataError,
                ) as exc:  # this message refused; the connection still serves the next
                    outcome[row.id] = self._error(exc)
                    continue
                outcome[row.id] = None
                if refused:  # the others have it: sending again would send them a second one
                    log.warning(
                        "notification %d: the SMTP server at %s refused %d of %d recipients",
                        row.id,
                        self.endpoint,
                        len(refused),
                        len(self.settings.notify_to),
                    )

    def _tls(self) -> ssl.SSLContext:
        """Verifies the server and its name: against TRIAGE_TLS_CA when set, else the system's."""
        ca = self.settings.tls_ca
        try:
            return ssl.create_default_context(cafile=str(ca) if ca is not None else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"TRIAGE_TLS_CA={str(ca)!r} cannot be used: {exc}") from None

    def _error(self, exc: BaseException) -> str:
        where = f"the SMTP server at {self.endpoint}"
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            return (
                f"{where} does not offer STARTTLS (TRIAGE_NOTIFY_SMTP_STARTTLS=false sends "
                "without TLS)"
            )
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return (
                f"{where} refused the login of TRIAGE_NOTIFY_SMTP_USER: {_smtp_answer(exc)} "
                "(check the user and TRIAGE_NOTIFY_SMTP_PASSWORD)"
            )
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            answers = sorted({f"{code}" for code, _ in exc.recipients.values()})
            return f"{where} refused every recipient of TRIAGE_NOTIFY_TO ({', '.join(answers)})"
        if isinstance(exc, smtplib.SMTPResponseException):
            return f"{where} answered {_smtp_answer(exc)}"
        if isinstance(exc, ssl.SSLError):
            return (
                f"no TLS with {where} ({_cause(exc)}): is TRIAGE_TLS_CA the CA that signed "
                "its certificate?"
            )
        if isinstance(exc, TimeoutError):
            return f"{where} did not answer within {TIMEOUT_SECONDS:g} s"
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            return f"{where} closed the connection: {exc}"
        return (
            f"cannot reach {where} ({_cause(exc)}): is it listening, and is "
            "TRIAGE_NOTIFY_SMTP right?"
        )


def _smtp_answer(exc: smtplib.SMTPResponseException) -> str:
    text = exc.smtp_error
    words = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return f"{exc.smtp_code} {' '.join(words.split())}"[:300]
