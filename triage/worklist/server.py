"""The web app's HTTP server: uvicorn in a thread of the node (or of `triage web`), HTTPS with
the node's TLS certificate and key when they are set.

The port is bound before the thread starts, so a port in use stops start-up with a message
that names TRIAGE_WEB_PORT, instead of a thread dying quietly.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

import uvicorn

from triage.config import Settings
from triage.errors import ConfigError

log = logging.getLogger(__name__)


class WebServer:
    def __init__(self, app: Any, settings: Settings, port: int | None = None) -> None:
        self.settings = settings
        chosen = settings.web_port if port is None else port
        if chosen is None:
            raise ConfigError("TRIAGE_WEB_PORT=off: the web app is switched off")
        self._socket = _bound(settings.host, chosen)
        self.port: int = self._socket.getsockname()[1]
        tls = settings.tls_required
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_level="warning",
                access_log=False,  # an access log would name studies; the audit keeps views
                ssl_certfile=str(settings.tls_cert) if tls else None,
                ssl_keyfile=str(settings.tls_key) if tls else None,
                lifespan="off",
                proxy_headers=False,
            )
        )
        self._thread = threading.Thread(target=self._run, name="triage-web", daemon=True)

    @property
    def url(self) -> str:
        scheme = "https" if self.settings.tls_required else "http"
        return f"{scheme}://{self.settings.host}:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except Exception:
            log.exception("the web app stopped")

    def stop(self, timeout: float = 10) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._socket.close()


def _bound(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"the web app cannot listen on {host}:{port} ({exc.strerror}): set TRIAGE_WEB_PORT "
            "to a free port, or off"
        ) from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock
