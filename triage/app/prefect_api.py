"""The embedded node's own Prefect API: a child process that dies with the node.

Without PREFECT_API_URL, Prefect starts a temporary API server (uvicorn) as a child of the
first flow run and stops it at exit - but a node killed with SIGKILL never runs its exit
handlers, and that child stays behind holding its port and its database. The node therefore
starts the same server itself, as a child that the kernel kills when the node dies
(``PR_SET_PDEATHSIG``), and points PREFECT_API_URL at it. An operator's PREFECT_API_URL (a
Prefect server) is used as it is, and nothing is started.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child, between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        # SIGKILL, not SIGTERM: a uvicorn still in its start-up (seconds, on a busy machine)
        # finishes starting before it acts on SIGTERM; its SQLite database survives a kill
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: the exit handler below still stops it on a clean exit
        pass
    os.setsid()  # a Ctrl-C in the node's terminal is the node's to handle, not the child's


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedPrefectAPI:
    """Prefect's API server for this node only, on 127.0.0.1 and a free port."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._started = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> None:
        """Start the server; `wait_ready` waits for it to answer. The child is started from a
        thread that lives as long as the child: the kernel's parent-death signal follows the
        thread that started it, and the caller's thread may end first."""
        threading.Thread(target=self._supervise, name="prefect-api", daemon=True).start()
        self._started.wait(30)

    def _supervise(self) -> None:
        env = {
            **os.environ,
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        env.pop("PREFECT_API_URL", None)
        log_file = open(self.home / "prefect-api.log", "ab")  # noqa: SIM115 - the child's
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    "prefect.server.api.server:create_app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "error",
                    "--lifespan",
                    "on",
                ],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        finally:
            self._started.set()
            log_file.close()
        self.process.wait()

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"Prefect's API server exited ({self.process.returncode}); see "
                    f"{self.home / 'prefect-api.log'}"
                )
            if health_problem(self.url, timeout=2) is None:
                return
            time.sleep(0.25)
        raise RuntimeError(f"Prefect's API server did not answer within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def health_problem(url: str, timeout: float = 5.0) -> str | None:
    """None when the Prefect API at ``url`` answers its health check; else what went wrong."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as answer:
            if answer.status == 200:
                return None
            return f"HTTP {answer.status} from {url}/health"
    except OSError as exc:
        return str(getattr(exc, "reason", exc))


def check_prefect_server(url: str, wait_seconds: float = 30.0) -> None:
    """The operator's Prefect server (PREFECT_API_URL) answers, within ``wait_seconds`` (a
    deployment starting all at once gives the server that long); else start-up stops."""
    from triage.errors import ConfigError

    deadline = time.monotonic() + wait_seconds
    while (problem := health_problem(url)) is not None:
        if time.monotonic() >= deadline:
            raise ConfigError(
                f"PREFECT_API_URL={url}: no Prefect server answers ({problem}) after "
                f"{wait_seconds:.0f} s; start it (`prefect server start`) or unset "
                "PREFECT_API_URL for the node's embedded API"
            )
        time.sleep(1.0)
