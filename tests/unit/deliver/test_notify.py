"""Urgent-finding notifications delivered from the outbox to real receivers on 127.0.0.1: an
HTTP server in a thread takes the webhook, aiosmtpd (STARTTLS with a throwaway CA, AUTH) the
e-mail. Retries, exactly-once delivery once a receiver is back, and what the outbox shows."""

from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage, Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from support.notifications import ACCESSION, PATIENT_ID, SECRET, NotifyingNode
from support.orthanc import free_port
from support.tls_certs import Identity, Pki, make_pki
from typer.testing import CliRunner

from triage.app.cli import app
from triage.catalogue import DELIVERED, PENDING
from triage.deliver.notify import SIGNATURE_HEADER, signature
from triage.report.notification import notification_key

SENDER, RECIPIENTS = "triage@hospital.example", ("neuro@hospital.example", "ct@hospital.example")
USER, PASSWORD = "triage-node", "mail-pa55"
TOKEN = "T0KEN-in-the-url"


@dataclass(frozen=True)
class Post:
    path: str
    headers: Message
    body: bytes


class Webhook:
    """An HTTP receiver: keeps every POST and answers the next status of ``answers`` (then 200)."""

    def __init__(
        self, port: int = 0, answers: tuple[int, ...] = (), tls: Identity | None = None
    ) -> None:
        self.received: list[Post] = []
        self.answers = list(answers)
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.received.append(Post(self.path, self.headers, body))
                self.send_response(hook.answers.pop(0) if hook.answers else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.scheme = "http"
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(tls.cert, tls.key)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/hooks/triage?token={TOKEN}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


class Mailbox:
    """aiosmtpd's handler and authenticator: keeps each message and each login."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], EmailMessage]] = []
        self.logins: list[tuple[str, bool]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        assert isinstance(envelope.content, bytes)
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((str(envelope.mail_from), list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            USER.encode(),
            PASSWORD.encode(),
        )
        self.logins.append((data.login.decode(), ok))
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535


class MailServer:
    """An SMTP server that takes mail only after STARTTLS and a login."""

    def __init__(self, identity: Identity, port: int | None = None) -> None:
        self.mailbox = Mailbox()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(identity.cert, identity.key)
        self.port = port or free_port()
        self.controller = Controller(
            self.mailbox,
            hostname="127.0.0.1",
            port=self.port,
            tls_context=context,
            require_starttls=True,
            authenticator=self.mailbox,
            auth_require_tls=True,
        )
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.stop()


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Any]:
    made: list[NotifyingNode] = []

    def make(**env: str) -> NotifyingNode:
        made.append(NotifyingNode(tmp_path / f"home{len(made)}", **env))
        return made[-1]

    yield make
    for node in made:
        node.close()


def webhook_env(url: str) -> dict[str, str]:
    return {"TRIAGE_NOTIFY_WEBHOOK": url, "TRIAGE_NOTIFY_WEBHOOK_SECRET": SECRET}


def smtp_env(port: int, pki: Pki, password_file: Path) -> dict[str, str]:
    password_file.write_text(PASSWORD + "\n")
    return {
        "TRIAGE_NOTIFY_SMTP": f"127.0.0.1:{port}",
        "TRIAGE_NOTIFY_FROM": SENDER,
        "TRIAGE_NOTIFY_TO": ",".join(RECIPIENTS),
        "TRIAGE_NOTIFY_SMTP_USER": USER,
        "TRIAGE_NOTIFY_SMTP_PASSWORD_FILE": str(password_file),
        "TRIAGE_TLS_CA": str(pki.ca),
    }


def test_the_webhook_gets_the_urgent_finding_signed(webhook: Webhook, make_node: Any) -> None:
    node = make_node(TRIAGE_WEB_URL="https://triage.hospital.example", **webhook_env(webhook.url()))
    study = node.receive("webhook-signed")
    sr = node.triage(study, 0.91)
    assert node.deliver().delivered == 1
    [row] = node.notify_rows()
    assert (row.state, row.attempts, row.last_error) == (DELIVERED, 1, None)

    [post] = webhook.received
    assert post.path == f"/hooks/triage?token={TOKEN}"
    assert post.headers["Content-Type"] == "application/json; charset=utf-8"
    # the receiver's check: HMAC-SHA256 of the raw body with the shared secret
    expected = "sha256=" + hmac.new(SECRET.encode(), post.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(post.headers[SIGNATURE_HEADER], expected)
    assert post.body == node.store.get(notification_key(study, sr))  # the stored bytes, as is
    payload = json.loads(post.body)
    assert payload["priority"] == "urgent"
    assert payload["finding"] == "Intracranial hemorrhage"
    assert payload["probability"] == pytest.approx(0.91)
    assert payload["threshold"] == 0.5
    assert (payload["model"], payload["model_version"]) == ("ich-detector", "1.0.0")
    assert payload["accession_number"] == ACCESSION
    assert payload["modality"] == "CT"
    assert payload["study_page"] == f"https://triage.hospital.example/studies/{study}"
    assert payload["sr_sop_instance_uid"] == sr
    assert "patient_name" not in payload
    for identifier in ("Doe", "Jane", PATIENT_ID):
        assert identifier.encode() not in post.body
    # nothing more to send
    assert node.deliver(all_pending=True).delivered == 0
    assert len(webhook.received) == 1


@pytest.mark.parametrize("server", ["hospital CA", "unknown CA"])
def test_an_https_webhook_is_verified_against_the_hospital_ca(
    pki: Pki, make_node: Any, server: str
) -> None:
    hook = Webhook(tls=pki.node if server == "hospital CA" else pki.stranger)
    try:
        node = make_node(TRIAGE_TLS_CA=str(pki.ca), **webhook_env(hook.url()))
        node.triage(node.receive(f"webhook-tls-{server}"), 0.9)
        summary = node.deliver()
    finally:
        hook.stop()
    [row] = node.notify_rows()
    if server == "hospital CA":
        assert (summary.delivered, row.state, len(hook.received)) == (1, DELIVERED, 1)
    else:
        assert (summary.retrying, row.state, hook.received) == (1, PENDING, [])
        assert "certificate verify failed" in (row.last_error or "")
        assert "TRIAGE_TLS_CA" in (row.last_error or "")
        assert TOKEN not in (row.last_error or "")


def test_a_signature_with_another_secret_does_not_match() -> None:
    body = b'{"event": "urgent finding"}'
    assert signature(SECRET, body) != signature("another secret", body)
    assert signature(SECRET, body) != signature(SECRET, body + b" ")


def test_a_webhook_that_is_down_gets_the_notification_once_it_is_back(make_node: Any) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hooks/triage?token={TOKEN}"
    node = make_node(**webhook_env(url))
    study = node.receive("webhook-down")
    node.triage(study, 0.88)

    summary = node.deliver()
    assert (summary.delivered, summary.retrying, summary.dead) == (0, 1, 0)
    [row] = node.notify_rows()
    assert (row.state, row.attempts) == (PENDING, 1)
    assert "Connection refused" in (row.last_error or "")
    assert f"http://127.0.0.1:{port}/..." in (row.last_error or "")
    assert TOKEN not in (row.last_error or "")  # the URL's token is never in an error

    hook = Webhook(port)
    try:
        assert node.deliver(all_pending=True).delivered == 1
        assert node.deliver(all_pending=True).delivered == 0
        assert node.deliver().delivered == 0
        assert len(hook.received) == 1
        [row] = node.notify_rows()
        assert (row.state, row.attempts, row.last_error) == (DELIVERED, 2, None)
    finally:
        hook.stop()


def test_a_refusing_webhook_is_retried_with_the_same_signed_body(make_node: Any) -> None:
    hook = Webhook(answers=(503, 401))
    try:
        node = make_node(**webhook_env(hook.url()))
        node.triage(node.receive("webhook-refusing"), 0.95)
        assert node.deliver().retrying == 1
        [row] = node.notify_rows()
        assert "answered HTTP 503" in (row.last_error or "")
        assert node.deliver(all_pending=True).retrying == 1
        [row] = node.notify_rows()
        assert "HTTP 401" in (row.last_error or "") and "SECRET" in (row.last_error or "")
        assert node.deliver(all_pending=True).delivered == 1
        first, *others = hook.received
        assert len(others) == 2
        assert all(p.body == first.body for p in others)  # a retry sends the same bytes
        assert {p.headers[SIGNATURE_HEADER] for p in hook.received} == {
            signature(SECRET, first.body)
        }
    finally:
        hook.stop()


def test_the_email_goes_over_starttls_with_a_login(
    pki: Pki, make_node: Any, tmp_path: Path
) -> None:
    server = MailServer(pki.node)
    try:
        node = make_node(**smtp_env(server.port, pki, tmp_path / "smtp-password"))
        study = node.receive("smtp-urgent")
        sr = node.triage(study, 0.9)
        assert node.deliver().delivered == 1
        [row] = node.notify_rows()
        assert (row.state, row.destination) == (DELIVERED, f"smtp:127.0.0.1:{server.port}")
    finally:
        server.stop()
    assert server.mailbox.logins == [(USER, True)]
    [(sender, recipients, message)] = server.mailbox.messages
    assert (sender, recipients) == (SENDER, list(RECIPIENTS))
    assert message["From"] == SENDER
    assert message["To"] == ", ".join(RECIPIENTS)
    assert message["Subject"] == f"URGENT: Intracranial hemorrhage suspected, accession {ACCESSION}"
    assert message["Message-ID"] == f"<{sr}.notify@hospital.example>"
    assert message["Date"].datetime.tzinfo is not None
    assert message["Auto-Submitted"] == "auto-generated"
    body = message.get_content()
    assert f"/studies/{study}" in body
    assert "Probability:  0.90 (the model's threshold: 0.50)" in body
    assert "Model:        ich-detector 1.0.0" in body
    assert sr in body
    for identifier in ("Doe", "Jane", PATIENT_ID):
        assert identifier not in message.as_string()


def test_an_smtp_server_that_is_down_gets_the_email_once_it_is_back(
    pki: Pki, make_node: Any, tmp_path: Path
) -> None:
    port = free_port()
    node = make_node(**smtp_env(port, pki, tmp_path / "smtp-password"))
    node.triage(node.receive("smtp-down"), 0.9)
    assert node.deliver().retrying == 1
    [row] = node.notify_rows()
    assert f"the SMTP server at 127.0.0.1:{port}" in (row.last_error or "")
    assert "Connection refused" in (row.last_error or "")

    server = MailServer(pki.node, port)
    try:
        assert node.deliver(all_pending=True).delivered == 1
        assert node.deliver(all_pending=True).delivered == 0
    finally:
        server.stop()
    assert len(server.mailbox.messages) == 1


@pytest.mark.parametrize("failure", ["wrong password", "unknown CA"])
def test_an_smtp_failure_is_an_error_that_says_what_to_check(
    pki: Pki, make_node: Any, tmp_path: Path, failure: str
) -> None:
    server = MailServer(pki.stranger if failure == "unknown CA" else pki.node)
    try:
        env = smtp_env(server.port, pki, tmp_path / "smtp-password")
        if failure == "wrong password":
            env["TRIAGE_NOTIFY_SMTP_PASSWORD"] = "not-the-password"
        node = make_node(**env)
        node.triage(node.receive(f"smtp-{failure}"), 0.9)
        assert node.deliver().retrying == 1
    finally:
        server.stop()
    [row] = node.notify_rows()
    assert row.state == PENDING
    error = row.last_error or ""
    if failure == "wrong password":
        assert "refused the login" in error and "TRIAGE_NOTIFY_SMTP_PASSWORD" in error
        assert "not-the-password" not in error
    else:
        assert "certificate verify failed" in error and "TRIAGE_TLS_CA" in error
    assert server.mailbox.messages == []


def test_outbox_list_shows_notifications_without_the_webhooks_token(
    pki: Pki, tmp_path: Path
) -> None:
    settings = {
        **webhook_env(f"https://hooks.example.org:8443/services/{TOKEN}?key={TOKEN}"),
        **smtp_env(2525, pki, tmp_path / "smtp-password"),
    }
    node = NotifyingNode(tmp_path / "home", **settings)
    try:
        sr = node.triage(node.receive("outbox-list"), 0.9)
    finally:
        node.close()
    env = {"TRIAGE_HOME": str(tmp_path / "home"), "COLUMNS": "400", **settings}
    runner = CliRunner()
    shown = runner.invoke(app, ["outbox", "list"], env=env)
    assert shown.exit_code == 0, shown.output
    assert TOKEN not in shown.output
    lines = [line for line in shown.output.splitlines() if sr in line]
    assert len(lines) == 2
    assert all(" notify " in line for line in lines)
    assert any(" smtp:127.0.0.1:2525 " in line for line in lines)
    assert any(" webhook:https://hooks.example.org:8443/... " in line for line in lines)
    listed = runner.invoke(app, ["outbox", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    assert TOKEN not in listed.output
    assert sorted(r["destination"] for r in json.loads(listed.output)) == [
        "smtp:127.0.0.1:2525",
        "webhook:https://hooks.example.org:8443/...",
    ]
