"""DICOM TLS (PS3.15 B.1, BCP 195): the receiver's and the result sender's TLS contexts.

The receiver listens with TLS only when TRIAGE_TLS_CERT and TRIAGE_TLS_KEY are set; with
TRIAGE_TLS_CA it also requires a client certificate signed by that CA (mutual TLS). The sender
uses TLS to the PACS when TRIAGE_PACS_TLS is true: it verifies the PACS against TRIAGE_TLS_CA (the
system's CAs when unset) and presents the node's certificate when one is set. TLS 1.2 at least.
"""

from __future__ import annotations

import logging
import socket
import ssl
from pathlib import Path
from typing import Any

from triage.config import Settings
from triage.errors import ConfigError

log = logging.getLogger(__name__)

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
HANDSHAKE_TIMEOUT_SECONDS = 30.0


class _HandshakeInItsThread(ssl.SSLSocket):
    """A server-side TLS socket that completes its handshake on the first read.

    pynetdicom wraps each accepted socket in its accept loop; a handshake there would let one
    client that connects and stays silent stop every other association. The first read happens
    in the association's own thread, under a timeout; a failed handshake reads as a closed
    connection, logged once here.
    """

    _handshake_done = False
    peer = "an unknown peer"

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        if not self._handshake_done and not self._handshake():
            return b""
        return super().recv(buflen, flags)

    def _handshake(self) -> bool:
        self._handshake_done = True
        try:
            self.do_handshake()
        except (OSError, ValueError) as exc:  # ssl.SSLError, timeouts and resets are OSErrors
            log.warning("TLS handshake with %s failed, connection closed: %s", self.peer, exc)
            return False
        self.settimeout(None)
        return True


class _ReceiverContext(ssl.SSLContext):
    """Server context whose sockets shake hands in the association thread, not on accept."""

    sslsocket_class = _HandshakeInItsThread

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        try:
            peer = str(sock.getpeername()[0])
        except OSError:
            peer = "a peer that has gone"
        sock.settimeout(HANDSHAKE_TIMEOUT_SECONDS)
        kwargs["do_handshake_on_connect"] = False
        wrapped = super().wrap_socket(sock, *args, **kwargs)
        if isinstance(wrapped, _HandshakeInItsThread):
            wrapped.peer = peer
        return wrapped


def receiver_context(settings: Settings) -> ssl.SSLContext | None:
    """The receiver's TLS context; None when TRIAGE_TLS_CERT and TRIAGE_TLS_KEY are not set."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = _ReceiverContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    _load_identity(context, settings.tls_cert, settings.tls_key)
    if settings.tls_ca is not None:
        _load_ca(context, settings.tls_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def sender_context(settings: Settings) -> ssl.SSLContext | None:
    """The result sender's TLS context; None unless TRIAGE_PACS_TLS is true."""
    if not settings.pacs_tls:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the peer and its host name
    context.minimum_version = MINIMUM_VERSION
    if settings.tls_ca is not None:
        _load_ca(context, settings.tls_ca)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if settings.tls_cert is not None and settings.tls_key is not None:
        _load_identity(context, settings.tls_cert, settings.tls_key)
    return context


def _load_identity(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"TRIAGE_TLS_CERT={str(cert)!r} and TRIAGE_TLS_KEY={str(key)!r} cannot be used "
            f"together ({exc.reason or exc}): give the node's certificate and its own "
            "unencrypted private key, both in PEM format"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"TRIAGE_TLS_CERT={str(cert)!r} or TRIAGE_TLS_KEY={str(key)!r} cannot be read: "
            f"{exc.strerror or exc}"
        ) from None


def _no_password() -> bytes:
    """An encrypted key fails at start-up instead of prompting on a terminal nobody watches."""
    return b""


def _load_ca(context: ssl.SSLContext, ca: Path) -> None:
    try:
        context.load_verify_locations(cafile=ca)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"TRIAGE_TLS_CA={str(ca)!r} holds no usable CA certificate ({exc.reason or exc}): "
            "give the CA bundle in PEM format"
        ) from None
    except OSError as exc:
        raise ConfigError(f"TRIAGE_TLS_CA={str(ca)!r} cannot be read: {exc.strerror}") from None
