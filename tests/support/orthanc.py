"""Orthanc as the PACS in integration tests: a child process on 127.0.0.1 with its own config,
storage folder and free ports, stopped by the test session. Optionally with the DICOMweb plugin
(Debian orthanc-dicomweb) at /dicom-web/ and HTTP basic auth."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ORTHANC = shutil.which("Orthanc")
DICOMWEB_PLUGIN = next(
    (
        path
        for path in (
            Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so"),
            Path("/usr/lib/orthanc/libOrthancDicomWeb.so"),
        )
        if path.exists()
    ),
    None,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Orthanc:
    folder: Path
    ae_title: str = "ORTHANC"
    dicom_port: int = 0
    http_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    auth: tuple[str, str] | None = None  # what the REST helpers below log in with

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def node(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.dicom_port}"

    def start(
        self,
        modalities: dict[str, tuple[str, str, int]] | None = None,
        extra: dict[str, Any] | None = None,
        *,
        dicomweb: bool = False,
        users: dict[str, str] | None = None,
        defaults: bool = False,
    ) -> None:
        """Start Orthanc; ``extra`` adds or overrides configuration (e.g. LuaScripts).

        ``dicomweb`` loads the DICOMweb plugin (QIDO-RS, WADO-RS, STOW-RS at /dicom-web/);
        ``users`` (name -> password) turns on HTTP basic auth for the REST API and DICOMweb.
        ``defaults``: Orthanc as a user runs it out of the box - only its folders, ports and AE
        title are set, so e.g. ``OverwriteInstances`` is false: the first copy of an instance
        is kept and a second one with the same SOP Instance UID is ignored.
        """
        assert ORTHANC, "Orthanc is not installed"
        assert not dicomweb or DICOMWEB_PLUGIN, "the DICOMweb plugin is not installed"
        self.dicom_port = self.dicom_port or free_port()
        self.http_port = self.http_port or free_port()
        config = {
            "Name": "triage-test-pacs",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "storage"),
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(users),
            "RegisteredUsers": dict(users or {}),
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowStore": True,
            "OverwriteInstances": True,
            "StorageCompression": False,
            "Plugins": [str(DICOMWEB_PLUGIN)] if dicomweb else [],
            "DicomModalities": {k: list(v) for k, v in (modalities or {}).items()},
            "HttpTimeout": 10,
            **(extra or {}),
        }
        if defaults:
            kept = ("Name", "StorageDirectory", "IndexDirectory", "DicomAet", "DicomPort")
            config = {k: config[k] for k in (*kept, "HttpPort", "RemoteAccessAllowed")}
            config.update(extra or {})
        if dicomweb:
            config["DicomWeb"] = {
                "Enable": True,
                "Root": "/dicom-web/",
                "EnableWado": False,
                "Host": f"127.0.0.1:{self.http_port}",
                "Ssl": False,
            }
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "orthanc.json").write_text(json.dumps(config, indent=2))
        self.auth = next(iter((users or {}).items()), None)
        env = {**os.environ, "TCP_NODELAY": "1"}
        log = open(self.folder / "orthanc.log", "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [ORTHANC, str(self.folder / "orthanc.json")], stdout=log, stderr=log, env=env
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(self.folder / 'orthanc.log').read_text()}")
            try:
                self.get("/system")
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("Orthanc did not start within 30 s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def _request(
        self, path: str, data: bytes | None = None, method: str = "GET"
    ) -> urllib.request.Request:
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if self.auth is not None:
            token = base64.b64encode(":".join(self.auth).encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        return request

    def store(self, datasets: list[Any], calling_ae: str = "MODALITY") -> None:
        """C-STORE the data sets into this Orthanc (as a modality would); all must succeed."""
        from triage.config import parse_node
        from triage.dimse import is_success, store_datasets

        node = parse_node("orthanc", self.node)
        assert node is not None
        statuses = store_datasets(node, datasets, calling_ae)
        assert all(is_success(s) for s in statuses), [hex(s) for s in statuses]

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self._request(path), timeout=10) as response:
            body = response.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body

    def post(self, path: str, data: bytes) -> Any:
        with urllib.request.urlopen(self._request(path, data, "POST"), timeout=30) as response:
            return json.loads(response.read())

    def put(self, path: str, data: bytes) -> Any:
        with urllib.request.urlopen(self._request(path, data, "PUT"), timeout=30) as response:
            body = response.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body

    def delete(self, path: str) -> None:
        urllib.request.urlopen(self._request(path, method="DELETE"), timeout=10).close()

    def upload(self, part10_files: list[bytes]) -> str:
        """Store DICOM files through the REST API, as they are (transfer syntax kept); the
        Orthanc ID of their study (all must be of one study)."""
        studies = {self.post("/instances", data)["ParentStudy"] for data in part10_files}
        assert len(studies) == 1, studies
        return studies.pop()

    def add_modality(self, name: str, ae_title: str, host: str, port: int) -> None:
        """Register a DICOM peer (PUT /modalities/{name}), e.g. the node to forward to."""
        entry = {"AET": ae_title, "Host": host, "Port": port}
        self.put(f"/modalities/{name}", json.dumps(entry).encode())

    def forward(self, modality: str, resources: list[str], timeout: float = 120) -> Any:
        """What a PACS router does: C-STORE the resources (study IDs...) to the modality as an
        asynchronous job (POST /modalities/{name}/store); returns the job once it is done."""
        body = json.dumps({"Resources": resources, "Synchronous": False}).encode()
        job_id = self.post(f"/modalities/{modality}/store", body)["ID"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(f"/jobs/{job_id}")
            if job["State"] in ("Success", "Failure"):
                return job
            time.sleep(0.2)
        raise AssertionError(f"Orthanc's store job {job_id} did not finish in {timeout} s")

    def delete_all(self) -> None:
        for study in self.get("/studies"):
            request = self._request(f"/studies/{study}", method="DELETE")
            urllib.request.urlopen(request, timeout=10).close()

    def instances_of_study(self, study_uid: str) -> list[dict[str, Any]]:
        """Every instance of the study with its main tags (via /tools/find)."""
        query = json.dumps(
            {"Level": "Instance", "Expand": True, "Query": {"StudyInstanceUID": study_uid}}
        ).encode()
        return list(self.post("/tools/find", query))

    def instance_file(self, orthanc_id: str) -> bytes:
        data = self.get(f"/instances/{orthanc_id}/file")
        assert isinstance(data, bytes)
        return data


def srs_in_orthanc(orthanc: Orthanc, study_uid: str) -> list[dict[str, Any]]:
    return [
        i
        for i in orthanc.instances_of_study(study_uid)
        if i["MainDicomTags"].get("SOPInstanceUID")
        and orthanc.get(f"/instances/{i['ID']}/tags?simplify").get("Modality") == "SR"
    ]
