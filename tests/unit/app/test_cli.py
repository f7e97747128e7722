"""The commands as a user runs them: configuration errors, serve stopping on SIGTERM, the demo."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import KeyObjectSelectionDocumentStorage

from triage.report.sr_read import read_triage_sr


def triage(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "triage.app.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_config_prints_the_effective_settings(tmp_path: Path) -> None:
    result = triage("config", env={"TRIAGE_HOME": str(tmp_path), "TRIAGE_QUIET_SECONDS": "7"})
    assert result.returncode == 0, result.stderr
    assert f"home                       {tmp_path}" in result.stdout
    assert "quiet_seconds              7.0" in result.stdout
    assert "TRIAGE_PACS is not set" in result.stderr


def test_a_wrong_value_stops_with_a_message_naming_it(tmp_path: Path) -> None:
    result = triage("serve", env={"TRIAGE_HOME": str(tmp_path), "TRIAGE_PACS": "ORTHANC:4242"})
    assert result.returncode == 2
    assert "TRIAGE_PACS" in result.stderr and "AE@host:port" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "TRIAGE_HOME": str(tmp_path), "TRIAGE_PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "triage.app.cli", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()[1]
                time.sleep(0.2)
        else:
            raise AssertionError("serve did not start listening")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopping" in out


@pytest.mark.slow
def test_demo_puts_lesion_studies_on_top(tmp_path: Path) -> None:
    env = {"TRIAGE_HOME": str(tmp_path), "COLUMNS": "150"}
    started = time.monotonic()
    result = triage("demo", "--studies", "4", env=env, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert time.monotonic() - started < 180
    assert "built-in stand-in" in result.stdout
    rows = json.loads(triage("worklist", "--json", env=env).stdout)
    assert len(rows) == 5
    assert [r["priority"] for r in rows[:2]] == ["urgent", "urgent"]
    assert {r["priority"] for r in rows[2:]} == {"routine", "not analysed"}
    received = [pydicom.dcmread(f) for f in (tmp_path / "demo-pacs").rglob("*.dcm")]
    # the stand-in also keeps the key object selection sent with each urgent result
    kos = [ds for ds in received if ds.SOPClassUID == KeyObjectSelectionDocumentStorage]
    assert len(kos) == 2
    delivered = [ds for ds in received if ds.SOPClassUID != KeyObjectSelectionDocumentStorage]
    assert len(delivered) == 5  # a result for each analysed study, and one that says why not
    said = sorted(f.priority.value for sr in delivered for f in read_triage_sr(sr))
    assert said == ["not analysed", "routine", "routine", "urgent", "urgent"]
