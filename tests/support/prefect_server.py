"""A real Prefect server in tests: `prefect server start` on 127.0.0.1 and a free port, with
its own PREFECT_HOME (its SQLite database) in a temporary folder. Stopped by its process id
(its process group: the server runs its services as children)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.orthanc import free_port
from triage.app.prefect_api import health_problem


@dataclass
class PrefectServer:
    folder: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self, timeout: float = 120.0) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        env = {
            **os.environ,
            "PREFECT_HOME": str(self.folder),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_UI_ENABLED": "false",
        }
        env.pop("PREFECT_API_URL", None)
        prefect = Path(sys.executable).with_name("prefect")
        log = open(self.folder / "server.log", "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the Prefect server exited:\n{self.log_tail()}")
            if health_problem(self.api_url, timeout=2) is None:
                return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the Prefect server did not answer in {timeout:.0f} s")

    def log_tail(self, chars: int = 3000) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def flow_runs(self, flow_name: str) -> list[dict[str, Any]]:
        """The server's flow runs of one flow (name, state, parameters), as its REST API says."""
        body = json.dumps({"flows": {"name": {"any_": [flow_name]}}, "limit": 200}).encode()
        request = urllib.request.Request(
            f"{self.api_url}/flow_runs/filter",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            runs: list[dict[str, Any]] = json.loads(answer.read())
        return runs

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.process = None
