"""`triage serve` as a child process of the test, with its own TRIAGE_HOME."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from support.orthanc import free_port
from triage.catalogue import Catalogue
from triage.store import LocalStore

QUIET = "1.5"


def triage_command() -> list[str]:
    script = Path(sys.executable).with_name("triage")
    return [str(script)] if script.exists() else [sys.executable, "-m", "triage.app.cli"]


class ServeNode:
    """`triage serve` as a child process with its own TRIAGE_HOME; started, killed, restarted."""

    def __init__(self, home: Path, pacs: str, prefect_api: str) -> None:
        self.home = home
        self.port = free_port()
        self.env = {
            **os.environ,
            "TRIAGE_HOME": str(home),
            "TRIAGE_PORT": str(self.port),
            "TRIAGE_PACS": pacs,
            "TRIAGE_QUIET_SECONDS": QUIET,
            "TRIAGE_DEVICE": "cpu",
            "TRIAGE_DELIVERY_BACKOFF_SECONDS": "0.5",
            "TRIAGE_LOG_LEVEL": "INFO",
            "PREFECT_API_URL": prefect_api,
        }
        self.log = home / "node.log"
        self.store = LocalStore(home / "store")
        self.process: subprocess.Popen[bytes] | None = None
        self._catalogue: Catalogue | None = None

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [*triage_command(), "serve"], stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"triage serve exited:\n{self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"triage serve did not listen within 90 s:\n{self.log_tail()}")

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
        if self._catalogue is not None:
            self._catalogue.close()

    @property
    def catalogue(self) -> Catalogue:
        """The node's SQLite catalogue, read from the test process."""
        if self._catalogue is None:
            self._catalogue = Catalogue(f"sqlite:///{self.home / 'catalogue.db'}")
        return self._catalogue

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def sop_uids(self, study_uid: str) -> tuple[set[str], set[str]]:
        """SOPInstanceUIDs of the study as (stored in the object store, in the catalogue)."""
        stored = {Path(k).stem for k in self.store.keys(f"raw/{study_uid}/")}
        catalogued = {Path(k).stem for k in self.catalogue.catalogued_keys(f"raw/{study_uid}/")}
        return stored, catalogued
