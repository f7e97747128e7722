"""`triage serve` as a child process of the test, with its own TRIAGE_HOME."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from support.orthanc import free_port
from triage.catalogue import Catalogue
from triage.store import LocalStore

QUIET = "1.5"


def triage_command() -> list[str]:
    script = Path(sys.executable).with_name("triage")
    return [str(script)] if script.exists() else [sys.executable, "-m", "triage.app.cli"]


class ServeProcess:
    """`triage serve ARGS...` as a child process with its own TRIAGE_HOME and log file:
    started (until ``ready()`` says so), killed with SIGKILL, stopped with SIGTERM."""

    def __init__(self, home: Path, env: dict[str, str], args: tuple[str, ...] = ()) -> None:
        self.home = home
        self.env = {**env, "TRIAGE_HOME": str(home)}
        self.args = args
        self.log = home / "node.log"
        self.process: subprocess.Popen[bytes] | None = None

    def launch(self, ready: Callable[[], bool], what: str, timeout: float = 90) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [*triage_command(), "serve", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"triage serve exited:\n{self.log_tail()}")
            if ready():
                return
            time.sleep(0.1)
        raise AssertionError(
            f"triage serve did not {what} within {timeout:.0f} s:\n{self.log_tail()}"
        )

    def said(self, text: str) -> bool:
        return self.log.exists() and text in self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or closed by the node itself."""
        assert self.process is not None and self.process.poll() is None, self.log_tail()
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(30) == -signal.SIGKILL

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


class ServeNode(ServeProcess):
    """The whole node (`triage serve`) with its own TRIAGE_HOME and port; started, killed,
    restarted."""

    def __init__(self, home: Path, pacs: str, prefect_api: str) -> None:
        self.port = free_port()
        super().__init__(
            home,
            {
                **os.environ,
                "TRIAGE_PORT": str(self.port),
                "TRIAGE_PACS": pacs,
                "TRIAGE_QUIET_SECONDS": QUIET,
                "TRIAGE_DEVICE": "cpu",
                "TRIAGE_DELIVERY_BACKOFF_SECONDS": "0.5",
                "TRIAGE_LOG_LEVEL": "INFO",
                "PREFECT_API_URL": prefect_api,
            },
        )
        self.store = LocalStore(home / "store")
        self._catalogue: Catalogue | None = None

    def start(self) -> None:
        self.launch(self._listening, "listen")

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), 1).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        super().stop()
        if self._catalogue is not None:
            self._catalogue.close()

    @property
    def catalogue(self) -> Catalogue:
        """The node's SQLite catalogue, read from the test process."""
        if self._catalogue is None:
            self._catalogue = Catalogue(f"sqlite:///{self.home / 'catalogue.db'}")
        return self._catalogue

    def sop_uids(self, study_uid: str) -> tuple[set[str], set[str]]:
        """SOPInstanceUIDs of the study as (stored in the object store, in the catalogue)."""
        stored = {Path(k).stem for k in self.store.keys(f"raw/{study_uid}/")}
        catalogued = {Path(k).stem for k in self.catalogue.catalogued_keys(f"raw/{study_uid}/")}
        return stored, catalogued
