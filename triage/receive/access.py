"""Which calling AE titles (and from which hosts) may open an association with the receiver.

TRIAGE_ALLOWED_AES lists ``AE`` or ``AE@host`` entries. An empty list accepts any calling AE. The
PACS named in TRIAGE_PACS is always allowed, from its own host, unless the list names its AE
title itself (then those entries decide, e.g. ``ORTHANC`` alone allows it from any host).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

from pynetdicom import evt

from triage.config import AllowedAE, Settings

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def allowed_callers(settings: Settings) -> tuple[AllowedAE, ...]:
    """TRIAGE_ALLOWED_AES plus the PACS; empty when any calling AE is accepted."""
    entries = settings.allowed_aes
    if not entries or settings.pacs is None:
        return entries
    if any(entry.ae_title == settings.pacs.ae_title for entry in entries):
        return entries
    return (*entries, AllowedAE(settings.pacs.ae_title, settings.pacs.host))


class AccessList:
    """Decides whether a calling AE title, connecting from a peer address, may associate."""

    def __init__(self, entries: Iterable[AllowedAE] = ()) -> None:
        self.entries = tuple(entries)

    @property
    def accepts_anyone(self) -> bool:
        return not self.entries

    @property
    def ae_titles(self) -> list[str]:
        return sorted({entry.ae_title for entry in self.entries})

    def refusal(self, calling_ae: str, peer: str) -> str | None:
        """Why the association is refused, or None when it is allowed."""
        if self.accepts_anyone:
            return None
        matching = [entry for entry in self.entries if entry.ae_title == calling_ae]
        if not matching:
            return "the calling AE title is not in TRIAGE_ALLOWED_AES"
        hosts = [entry.host for entry in matching]
        if None in hosts or any(_same_host(peer, host) for host in hosts if host is not None):
            return None
        return f"this AE title is allowed only from {', '.join(h for h in hosts if h)}"


def _same_host(peer: str, host: str) -> bool:
    address = _address(peer)
    return address is not None and address in _addresses_of(host)


def _address(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _addresses_of(host: str) -> set[IPAddress]:
    """The host's addresses: itself when it is an IP address, else what it resolves to now."""
    literal = _address(host)
    if literal is not None:
        return {literal}
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):  # unresolvable: nobody matches it
        return set()
    found = (_address(str(info[4][0])) for info in infos)
    return {address for address in found if address is not None}


# A-ASSOCIATE-RJ (PS3.8 9.3.4): rejected-permanent, by the service user, with the reason
REJECTED_PERMANENT = 0x01
SERVICE_USER = 0x01
CALLING_AE_NOT_RECOGNISED = 0x03
CALLED_AE_NOT_RECOGNISED = 0x07


def reject_if_refused(
    assoc: Any,
    ae_title: str,
    access: AccessList,
    on_refused: Callable[[], None] | None = None,
) -> bool:
    """Reject an association request whose called AE title is not ``ae_title`` or whose calling
    AE (or its host) ``access`` does not allow; log it; True when it was rejected. A check that
    cannot run refuses (fail closed). ``on_refused`` runs before the peer is answered, so that
    whatever it counts is counted by the time the peer sees the rejection."""
    try:
        calling, peer, refusal = _refusal(assoc, ae_title, access)
    except Exception:  # pynetdicom's request can be malformed in many ways
        log.exception("could not check an association request; rejected it")
        calling, peer = "?", "?"
        refusal = ("the request could not be checked", CALLING_AE_NOT_RECOGNISED)
    if refusal is None:
        return False
    reason, diagnostic = refusal
    log.warning("rejected association from AE %r at %s: %s", calling, peer, reason)
    if on_refused is not None:
        on_refused()
    # as pynetdicom's own ACSE check does: A-ASSOCIATE-RJ, then end the association thread
    assoc.acse.send_reject(REJECTED_PERMANENT, SERVICE_USER, diagnostic)
    evt.trigger(assoc, evt.EVT_REJECTED, {})
    assoc.kill()
    return True


def _refusal(
    assoc: Any, ae_title: str, access: AccessList
) -> tuple[str, str, tuple[str, int] | None]:
    """(calling AE title, peer address, None or (why refused, A-ASSOCIATE-RJ reason))."""
    request = assoc.requestor.primitive
    if request is None:
        raise ValueError("no A-ASSOCIATE request")
    called = str(request.called_ae_title).strip()
    calling = str(request.calling_ae_title).strip()
    peer = str(assoc.requestor.address)
    if called != ae_title:
        why = f"called AE title {called!r} is not this node's ({ae_title})"
        return calling, peer, (why, CALLED_AE_NOT_RECOGNISED)
    refusal = access.refusal(calling, peer)
    return calling, peer, None if refusal is None else (refusal, CALLING_AE_NOT_RECOGNISED)
