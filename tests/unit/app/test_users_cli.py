"""`triage users`: accounts with an argon2 hash, the password read from stdin only; and
`triage web`, the web app on its own."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from support.orthanc import free_port
from support.serve import triage_command
from typer.testing import CliRunner

from triage.app.cli import app
from triage.catalogue import Catalogue
from triage.errors import TriageError


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def triage(home: Path, *args: str, stdin: str = "") -> Ran:
    """The command in this process (as `main` runs it: a TriageError exits with 2)."""
    env = {k: v for k, v in os.environ.items() if k.startswith("TRIAGE_")}
    result = CliRunner().invoke(
        app, list(args), input=stdin, env={**dict.fromkeys(env), "TRIAGE_HOME": str(home)}
    )
    if isinstance(result.exception, TriageError):
        return Ran(2, result.stdout, str(result.exception))
    return Ran(result.exit_code, result.stdout, result.stderr)


def test_users_add_list_passwd_remove(tmp_path: Path) -> None:
    added = triage(
        tmp_path, "users", "add", "dr-ito", "--role", "engineer", stdin="long-enough-pw\n"
    )
    assert added.returncode == 0, added.stderr
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'catalogue.db'}")
    account = catalogue.user("dr-ito")
    assert account is not None and account.role == "engineer"
    assert account.password_hash.startswith("$argon2id$")
    assert "long-enough-pw" not in account.password_hash
    listed = triage(tmp_path, "users", "list")
    assert "dr-ito" in listed.stdout and "engineer" in listed.stdout

    token, _ = catalogue.start_session("dr-ito", 1)
    changed = triage(tmp_path, "users", "passwd", "dr-ito", stdin="another-long-pw\n")
    assert changed.returncode == 0, changed.stderr
    assert catalogue.session_login(token) is None  # a new password ends the sessions

    catalogue.record_access("dr-ito", "view study", "1.2.3", "10.0.0.9")
    audit = triage(tmp_path, "users", "audit", "--study", "1.2.3", "--json")
    assert audit.returncode == 0, audit.stderr
    assert '"action": "view study"' in audit.stdout and "10.0.0.9" in audit.stdout
    assert triage(tmp_path, "users", "remove", "dr-ito").returncode == 0
    assert catalogue.user("dr-ito") is None
    gone = triage(tmp_path, "users", "remove", "dr-ito")
    assert gone.returncode == 2 and "no user" in gone.stderr
    catalogue.close()


def test_users_add_refuses_bad_input(tmp_path: Path) -> None:
    short = triage(tmp_path, "users", "add", "a", stdin="short\n")
    assert short.returncode == 2 and "at least 10 characters" in short.stderr
    role = triage(tmp_path, "users", "add", "a", "--role", "root", stdin="long-enough-pw\n")
    assert role.returncode == 2 and "clinician" in role.stderr
    empty = triage(tmp_path, "users", "add", "a", stdin="")
    assert empty.returncode == 2 and "stdin" in empty.stderr
    assert triage(tmp_path, "users", "add", "a", stdin="long-enough-pw\n").returncode == 0
    again = triage(tmp_path, "users", "add", "a", stdin="long-enough-pw\n")
    assert again.returncode == 2 and "exists already" in again.stderr


def test_triage_web_serves_on_its_own_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    process = subprocess.Popen(
        [*triage_command(), "web", "--port", str(port)],
        env={**env, "TRIAGE_HOME": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                alive = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        assert alive.json() == {"status": "alive"}
        assert requests.get(f"http://127.0.0.1:{port}/api/worklist", timeout=5).status_code == 401
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
