"""PostgreSQL as a real database in tests: Debian's server binaries (initdb, postgres) in a
temporary folder, on 127.0.0.1 and a free port, run as the `postgres` user when the tests run as
root (PostgreSQL refuses root). A password account `triage` reaches it over TCP the way a node
does (scram-sha-256); each test gets a database of its own. Stopped by its process id.

fsync is off: the tests check what the node does, not the disk's durability, and creating a
database per test is then quick on a 2-core machine.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from support.orthanc import free_port

USER = "triage"
PASSWORD = "triage-test-password"


def server_binaries() -> Path | None:
    """The folder with initdb and postgres: Debian's /usr/lib/postgresql/N/bin, else PATH."""
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(folder) / "initdb").is_file():
            return Path(folder)
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _as_server_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


@dataclass
class PostgreSQL:
    port: int = 0
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="triage-pg-")))
    pid: int | None = None

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str = "postgres", *, password: str = PASSWORD) -> str:
        return f"postgresql+psycopg://{USER}:{password}@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        binaries = server_binaries()
        assert binaries, "PostgreSQL is not installed (Debian package postgresql)"
        self._bin = binaries
        if os.geteuid() == 0:
            server_user = pwd.getpwnam("postgres")
            os.chown(self.folder, server_user.pw_uid, server_user.pw_gid)
        password_file = self.folder / "password"
        password_file.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            os.chown(password_file, server_user.pw_uid, server_user.pw_gid)
        self._run(
            str(binaries / "initdb"),
            "-D",
            str(self.data),
            "-U",
            USER,
            f"--pwfile={password_file}",
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "-E",
            "UTF8",
            "--no-instructions",
        )
        self.port = self.port or free_port()

    def start(self, timeout: float = 60.0) -> None:
        if not self.data.exists():
            self.init()
        log = self.folder / "server.log"
        command = [
            *_as_server_user(),
            str(self._bin / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.folder}",
            "-c",
            "fsync=off",
            "-c",
            "max_connections=200",
        ]
        with open(log, "ab") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"PostgreSQL did not start:\n{log.read_text()[-3000:]}")
            if self._accepts():
                # runuser forks: the server is its child; stop that one by its pid
                self.pid = self._postmaster_pid() or process.pid
                self._runner = process
                return
            time.sleep(0.2)
        process.kill()
        raise RuntimeError(f"PostgreSQL did not start in {timeout:.0f} s")

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _accepts(self) -> bool:
        import psycopg

        try:
            psycopg.connect(
                host="127.0.0.1", port=self.port, user=USER, password=PASSWORD, dbname="postgres"
            ).close()
            return True
        except psycopg.OperationalError:
            return False

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT to the server's process): clients are disconnected."""
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(self.pid):
            time.sleep(0.1)
        if _alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)
        self._runner.wait(10)
        self.pid = None

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=USER,
            password=PASSWORD,
            dbname="postgres",
            autocommit=True,
        ) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [*_as_server_user(), *args], capture_output=True, text=True, cwd=self.folder
        )
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stderr[-2000:]}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (reaped by its runuser parent) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False
