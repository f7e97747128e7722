"""pynetdicom's accepting side, woken by events instead of polling.

pynetdicom runs two threads per association, and both poll: the association reactor sleeps
1 ms before each look at its message queue, and the DUL reactor sleeps 1 ms whenever neither
the socket nor its outgoing queue had anything. Each C-STORE waits on both (the request is
seen up to a sleep late, the response is sent up to a sleep late), which on one association
is a large part of the time per instance. Here the same reactors wait on what they poll for:
the association reactor on an event set by every put into its two inbound queues, the DUL
reactor in ``select`` on its socket and a wake-up socket written by every put into its
outbound queue. Each wait has a timeout (``IDLE_WAIT_SECONDS``) so the timers (ARTIM,
network timeout) and a dead peer thread are still noticed.

Nothing here changes what is sent or when a status is answered: only how the threads wait.
It also drops pynetdicom's standard logging handlers from the receiver's associations while
pynetdicom's logger is not enabled for INFO (the node keeps it at WARNING): they format every
PDU and DIMSE message for lines nobody sees.

Upgrades: the reactor below mirrors pynetdicom 3.0's ``Association._run_reactor`` and
``DULServiceProvider.stop_dul``, and relies on the private parts named in ``MIRRORED`` (the
queues' names, ``RequestHandler._create_association``, ``_is_transport_event``, ...). It is
used only where pynetdicom's version is in ``CHECKED_VERSIONS`` and the source of each of
those functions still has the digest it had when checked; anywhere else the receiver runs on
stock pynetdicom (slower, the same behaviour) and says so in its log. An upgrade therefore
cannot change behaviour silently, and ``tests/unit/receive/test_network.py`` fails until the
new version has been checked: compare each function named in the failure with this module,
then update ``MIRRORED`` and ``CHECKED_VERSIONS``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import inspect
import logging
import queue
import select
import socket
import ssl
import threading
import time
import weakref
from typing import Any, cast

import pynetdicom
from pynetdicom import AE, evt
from pynetdicom._handlers import (
    standard_dimse_recv_handler,
    standard_dimse_sent_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

log = logging.getLogger(__name__)
_reactor_log = logging.getLogger("pynetdicom.association")  # the stock reactor's messages

CHECKED_VERSIONS = frozenset({"3.0.4"})
# what this module copies or relies on -> sha256 of its source (first 16 hex digits)
MIRRORED = {
    "association.Association._run_reactor": "f28838c5559e462a",
    "association.Association.run_reactor": "ed8bbbe3b3d6ddae",
    "association.Association.kill": "8f9713666a7f4cff",
    "association.Association.__init__": "eb07516b8009ad8f",
    "dul.DULServiceProvider.run_reactor": "e3a10eb3a0931e48",
    "dul.DULServiceProvider.stop_dul": "28a7e0be126e7b30",
    "dul.DULServiceProvider.kill_dul": "5ceccf8dd01c2072",
    "dul.DULServiceProvider._is_transport_event": "8725ed03bb8fbdef",
    "dul.DULServiceProvider.__init__": "c82dafa9438ddf70",
    "dul.DULServiceProvider.send_pdu": "7cbce5da8594124e",
    "dimse.DIMSEServiceProvider.__init__": "bbecd186810e7700",
    "dimse.DIMSEServiceProvider.get_msg": "890e3e04283f5aeb",
    "transport.RequestHandler._create_association": "05c8d12b79863cdb",
    "transport.RequestHandler.handle": "034823fb4df3a874",
    "transport.AssociationSocket.recv": "6bc20a33b1b7cfe7",
    "ae.ApplicationEntity.start_server": "d3868a2df83d3cc0",
    "ae.ApplicationEntity.make_server": "6569298ac5cf837c",
    "transport.AssociationServer.shutdown": "e8e2c3a41009886d",
}
IDLE_WAIT_SECONDS = 0.05
_STANDARD_HANDLERS = (
    (evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
    (evt.EVT_DIMSE_SENT, standard_dimse_sent_handler),
    (evt.EVT_PDU_RECV, standard_pdu_recv_handler),
    (evt.EVT_PDU_SENT, standard_pdu_sent_handler),
)


def changed_since_checked() -> list[str]:
    """The functions of ``MIRRORED`` whose source differs from the one checked (or cannot
    be read)."""
    changed = []
    for name, digest in MIRRORED.items():
        module, _, path = name.partition(".")
        try:
            target: Any = importlib.import_module(f"pynetdicom.{module}")
            for part in path.split("."):
                target = getattr(target, part)
            source = inspect.getsource(target)
        except (AttributeError, ImportError, OSError, TypeError):
            changed.append(name)
            continue
        if hashlib.sha256(source.encode()).hexdigest()[:16] != digest:
            changed.append(name)
    return changed


@functools.cache
def prompt_reactors_supported() -> bool:
    """Whether this pynetdicom is the one the event-driven reactors were checked against."""
    return pynetdicom.__version__ in CHECKED_VERSIONS and not changed_since_checked()


class _SignallingQueue(queue.Queue[Any]):
    """A queue that calls ``signal`` after every put."""

    def __init__(self, signal: Any) -> None:
        super().__init__()
        self._signal = signal

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._signal()


class PromptDUL(DULServiceProvider):
    """The DUL reactor waiting in ``select`` for its socket or its outbound queue."""

    _wake_r: socket.socket
    _wake_w: socket.socket

    def _make_prompt(self) -> None:
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        weakref.finalize(self, _close_all, self._wake_r, self._wake_w)
        self.to_provider_queue = _SignallingQueue(self._wake)
        # the stock loop sleeps this long when idle; the wait below replaces that sleep
        self._run_loop_delay = 0

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # a full buffer already wakes
            self._wake_w.send(b"\0")

    def _is_transport_event(self) -> bool:
        if super()._is_transport_event():
            return True
        self._wait_for_work()
        return False

    def _wait_for_work(self) -> None:
        if self._kill_thread or not self.event_queue.empty():
            return
        if not self.to_provider_queue.empty():
            return
        sock = getattr(self.socket, "socket", None)
        if sock is None:
            time.sleep(0.001)  # stock behaviour: nothing to wait on
            return
        try:
            select.select([sock, self._wake_r], [], [], IDLE_WAIT_SECONDS)
        except (OSError, ValueError):  # closed under us: the next pass sees it
            time.sleep(0.001)
        with contextlib.suppress(BlockingIOError, OSError):
            while self._wake_r.recv(4096):
                pass

    def kill_dul(self) -> None:
        super().kill_dul()
        self._wake()

    def stop_dul(self) -> bool:
        # pynetdicom 3.0's stop_dul, with a wake-up so the reactor stops without its timeout
        if self.state_machine.current_state == "Sta1":
            self._kill_thread = True
            self._wake()
            while self.is_alive():
                time.sleep(0.001)
            return True
        return False


class PromptSocket(AssociationSocket):
    """Reads a PDU in as few ``recv`` calls as the socket allows (stock: 4096 bytes a call,
    each a release and re-acquisition of the GIL). A TLS socket reads as stock: its own
    ``recv`` completes the handshake (`triage.receive.tls`)."""

    def recv(self, nr_bytes: int) -> bytearray:
        sock = cast(socket.socket, self.socket)
        if isinstance(sock, ssl.SSLSocket):
            return super().recv(nr_bytes)
        data = bytearray(nr_bytes)
        view = memoryview(data)
        got = 0
        try:
            while got < nr_bytes:
                n = sock.recv_into(view[got:])
                if not n:  # the connection broke: what arrived, as stock returns it
                    return data[:got]
                got += n
        finally:
            view.release()
        return data


class PromptAssociation(Association):
    """The association reactor waiting on an event instead of sleeping 1 ms per pass."""

    _work: threading.Event

    def _make_prompt(self) -> None:
        self._work = threading.Event()
        self.dimse.msg_queue = _SignallingQueue(self._work.set)
        self.dul.to_user_queue = _SignallingQueue(self._work.set)

    def kill(self) -> None:
        self._work.set()
        super().kill()

    def _run_reactor(self) -> None:
        # pynetdicom 3.0's Association._run_reactor; the 1 ms sleep at the top of each pass is
        # replaced by a wait for a message, a release or abort primitive, or the idle timeout
        self._is_paused = False
        while not self._kill:
            self._is_paused = True
            self._work.wait(IDLE_WAIT_SECONDS)
            self._work.clear()
            self._reactor_checkpoint.wait()
            self._is_paused = False

            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, context_id)  # type: ignore[arg-type]

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                _reactor_log.info("Association Released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                _reactor_log.info("Association Aborted")
                self.dul.receive_pdu(wait=False)
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                _reactor_log.error("Network timeout reached")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return


class PromptRequestHandler(RequestHandler):
    """pynetdicom's request handler, whose associations use the prompt reactors."""

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        make_prompt(assoc)
        return assoc


def start_server(
    ae: AE,
    address: tuple[str, int],
    *,
    ssl_context: ssl.SSLContext | None,
    evt_handlers: list[Any],
) -> ThreadedAssociationServer:
    """``ae.start_server(address, block=False, ...)``, with the prompt reactors where this
    pynetdicom is one they were checked against (else stock, and a warning)."""
    if not prompt_reactors_supported():
        log.warning(
            "pynetdicom %s is not the one the receiver's event-driven reactors were checked "
            "against (%s; changed since: %s; see triage/receive/network.py): the receiver runs "
            "on pynetdicom's stock, polling reactors",
            pynetdicom.__version__,
            ", ".join(sorted(CHECKED_VERSIONS)),
            ", ".join(changed_since_checked()) or "none",
        )
        server = ae.start_server(
            address, block=False, ssl_context=ssl_context, evt_handlers=evt_handlers
        )
        assert server is not None
        return server
    server = ae.make_server(
        address,
        ssl_context=ssl_context,
        evt_handlers=evt_handlers,
        server_class=ThreadedAssociationServer,
        request_handler=PromptRequestHandler,
    )
    thread = threading.Thread(target=server.serve_forever, name="AcceptorServer", daemon=True)
    thread.start()
    ae._servers.append(server)  # as start_server does: server.shutdown() takes it off
    return server


def make_prompt(assoc: Association) -> None:
    """Turn a new, not yet started acceptor association into a prompt one (same state, same
    handlers; only the reactors' waiting changes)."""
    assoc.__class__ = PromptAssociation
    assoc.dul.__class__ = PromptDUL
    if type(assoc.dul.socket) is AssociationSocket:
        assoc.dul.socket.__class__ = PromptSocket
    assert isinstance(assoc, PromptAssociation) and isinstance(assoc.dul, PromptDUL)
    assoc.dul._make_prompt()
    assoc._make_prompt()
    if not logging.getLogger("pynetdicom").isEnabledFor(logging.INFO):
        for event, handler in _STANDARD_HANDLERS:
            assoc.unbind(event, handler)


def _close_all(*socks: socket.socket) -> None:
    for s in socks:
        s.close()
