"""A TCP proxy in front of a real server that fails the first connections the way networks and
load balancers do (a connection closed before any answer, or an HTML 503), then passes bytes
through: to see that a client retries passing failures."""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field

BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html\r\n"
    b"Content-Length: 5\r\nConnection: close\r\n\r\nbusy!"
)


@dataclass
class FlakyProxy:
    target_port: int
    #: what each of the first connections gets: "close" or "503"; later ones pass through
    failures: list[str] = field(default_factory=list)
    port: int = 0
    failed: int = 0
    _open: list[socket.socket] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()
        self.drop_connections()

    def drop_connections(self) -> None:
        """Close every connection passed through so far, as an outage or a restart does."""
        while self._open:
            with contextlib.suppress(OSError):
                self._open.pop().shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.failures:
                how = self.failures.pop(0)
                self.failed += 1
                if how == "503":
                    client.recv(65536)  # the request's head, then the refusal
                    client.sendall(BUSY)
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._open += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(src, dst), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
    finally:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
