"""Crash safety: the real node (`triage serve`, a child process) is killed with SIGKILL while it
receives, while it triages and while it delivers; then it is started again on the same home.

What must hold after the restart: every instance the sender (dcmtk storescu) got a success status
for is in the store and the catalogue; an interrupted study is triaged again, under a new
generation; the PACS (a real Orthanc) ends with exactly one SR per study and model version, whose
SOPInstanceUID is the deterministic one (study, model, version, input series).

The node runs its flows against the session's Prefect test server (PREFECT_API_URL), so a
restart does not pay for a fresh embedded Prefect API. Nothing is mocked.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
from conftest import require
from orthanc import ORTHANC, Orthanc, free_port
from sqlalchemy import select
from test_end_to_end import srs_in_orthanc, storescu

from triage.analysis.selection import select_series
from triage.app.demo import DemoStudy, write_demo_studies
from triage.catalogue import DELIVERED, TRIAGED, TRIAGING, Catalogue, Result
from triage.config import PROJECT_ROOT
from triage.modelops.bundle import discover_models
from triage.report.sr import read_triage_sr, sr_uids
from triage.store import LocalStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUIET = "1.5"

# While the "hold" file exists, Orthanc notes each SR it receives in the "arrived" file and then
# holds it, before it stores it and answers, until the test opens the "gate" FIFO for writing: a
# delivery in flight that the test sees and kills a process in. (Reading a FIFO blocks without a
# child process: a `sleep` started by os.execute would inherit the association's socket and keep
# it open after Orthanc itself is killed.)
HOLDING_FILTER = """
function ReceivedInstanceFilter(dicom, origin, info)
  if dicom.Modality == 'SR' then
    local hold = io.open('{hold}', 'r')
    if hold ~= nil then
      hold:close()
      local arrived = io.open('{arrived}', 'a')
      arrived:write(dicom.SOPInstanceUID .. '\\n')
      arrived:close()
      local gate = io.open('{gate}', 'r')
      gate:read('*a')
      gate:close()
    end
  end
  return true
end
"""


@dataclass
class HoldingPacs:
    """Orthanc with HOLDING_FILTER."""

    orthanc: Orthanc
    folder: Path
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, folder: Path, ae_title: str) -> HoldingPacs:
        folder.mkdir(parents=True, exist_ok=True)
        pacs = cls(Orthanc(folder / "orthanc", ae_title=ae_title), folder)
        os.mkfifo(pacs.gate)
        script = folder / "hold.lua"
        script.write_text(
            HOLDING_FILTER.format(hold=pacs.hold, arrived=pacs.arrived, gate=pacs.gate)
        )
        pacs.config = {"LuaScripts": [str(script)]}
        pacs.orthanc.start(extra=pacs.config)
        return pacs

    @property
    def hold(self) -> Path:
        return self.folder / "hold"

    @property
    def arrived(self) -> Path:
        return self.folder / "arrived"

    @property
    def gate(self) -> Path:
        return self.folder / "gate"

    def arrived_uids(self) -> list[str]:
        return self.arrived.read_text().split() if self.arrived.exists() else []

    def release(self) -> None:
        """Stop holding: the SR in hand (if any) goes on, later ones are not held."""
        self.hold.unlink(missing_ok=True)
        for _ in range(10):
            try:
                fd = os.open(self.gate, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: nobody is waiting at the gate
                return
            os.close(fd)
            time.sleep(0.1)

    def stop(self) -> None:
        self.release()
        self.orthanc.stop()


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HoldingPacs]:
    if ORTHANC is None:
        pytest.skip("Orthanc is not installed (Debian package orthanc)")
    pacs = HoldingPacs.start(tmp_path_factory.mktemp("crash-pacs"), "CRASHPACS")
    yield pacs
    pacs.stop()


@pytest.fixture(scope="module")
def prefect_api(prefect_harness: None) -> str:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url, "the Prefect test harness has no API URL"
    return str(url)


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


@pytest.fixture
def node(tmp_path: Path, pacs: HoldingPacs, prefect_api: str) -> Iterator[ServeNode]:
    serve = ServeNode(tmp_path / "home", pacs.orthanc.node, prefect_api)
    yield serve
    serve.stop()
    pacs.release()


def poll(predicate: Callable[[], bool], timeout: float, what: str, node: ServeNode) -> None:
    """Wait for a condition, checking often (a state that lasts a second must not be missed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}:\n{node.log_tail()}")


def one_study(root: Path, slices: int = 40) -> DemoStudy:
    (study,) = write_demo_studies(
        root, count=1, unanalysable=0, shape=(128, 128, slices), spacing=(1.8, 1.8, 4.0)
    )
    return study


def sop_uids_of(folder: Path) -> dict[Path, str]:
    return {
        path: str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        for path in sorted(folder.glob("*.dcm"))
    }


def expected_sr_uid(catalogue: Catalogue, study_uid: str) -> str:
    """The SR's SOPInstanceUID a clean run of the shipped model gives: from (study, model,
    version, input series)."""
    (model,) = discover_models(PROJECT_ROOT / "models")
    series, reason = select_series(model.rule, catalogue.series_of(study_uid))
    assert series is not None, reason
    return sr_uids(
        study_uid, model.name, model.version, [series.series_instance_uid]
    ).sop_instance_uid


def triaged_and_delivered(node: ServeNode, study_uid: str) -> Callable[[], bool]:
    def done() -> bool:
        state = node.catalogue.study_state(study_uid)
        rows = [r for r in node.catalogue.deliveries() if r.study_instance_uid == study_uid]
        return (
            state is not None
            and state[0] == TRIAGED
            and bool(rows)
            and all(r.state == DELIVERED for r in rows)
        )

    return done


def assert_exactly_one_sr(node: ServeNode, pacs: HoldingPacs, study_uid: str) -> None:
    """Orthanc holds one SR for the study, the deterministic one, with the catalogue's result;
    the catalogue and the outbox name the same SOP instance, once."""
    expected = expected_sr_uid(node.catalogue, study_uid)
    srs = srs_in_orthanc(pacs.orthanc, study_uid)
    uids = [i["MainDicomTags"]["SOPInstanceUID"] for i in srs]
    assert uids == [expected], f"SRs in Orthanc: {uids}, expected only {expected}"
    with node.catalogue.session() as s:
        # the active model's result (a model in shadow mode writes no SR)
        active = select(Result.sr_sop_instance_uid).where(Result.role == "active")
        recorded = list(s.scalars(active))
    assert recorded == [expected]
    rows = [r for r in node.catalogue.deliveries() if r.study_instance_uid == study_uid]
    assert [(r.sop_instance_uid, r.state) for r in rows] == [(expected, DELIVERED)]
    # the PACS holds the newest result, not one from a run the crash cut short
    ds = pydicom.dcmread(io.BytesIO(pacs.orthanc.instance_file(srs[0]["ID"])))
    (finding,) = read_triage_sr(ds)
    (row,) = [r for r in node.catalogue.worklist() if r.study_instance_uid == study_uid]
    (listed,) = row.findings
    assert finding.probability == pytest.approx(listed.probability, abs=1e-6)


def test_kill_while_receiving_loses_nothing_that_was_acknowledged(
    node: ServeNode, pacs: HoldingPacs, tmp_path: Path
) -> None:
    study = one_study(tmp_path / "study")
    files = sop_uids_of(study.folder)
    node.start()
    sent = tmp_path / "storescu.log"
    with open(sent, "wb") as log:
        # the modality: one association, an instance at a time (no TCP_NODELAY: not hurried)
        sender = subprocess.Popen(
            [
                require("storescu"),
                "-v",
                "-aet",
                "MODALITY",
                "-aec",
                "TRIAGE",
                "+sd",
                "+r",
                "127.0.0.1",
                str(node.port),
                str(study.folder),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        poll(
            lambda: len(node.sop_uids(study.study_instance_uid)[1]) >= 3,
            60,
            "the first instances to be catalogued",
            node,
        )
        node.kill()
        sender.wait(60)
    finally:
        if sender.poll() is None:
            sender.kill()
    assert sender.returncode != 0, "storescu should have lost its association"
    acknowledged = storescu_successes(sent.read_text(errors="replace"), files)
    assert 0 < len(acknowledged) < len(files), "the node was not killed mid-transfer"

    node.start()  # an unclean stop: the receiver reconciles the catalogue with the store
    stored, catalogued = node.sop_uids(study.study_instance_uid)
    assert acknowledged <= stored, "an acknowledged instance is missing from the store"
    assert acknowledged <= catalogued, "an acknowledged instance is missing from the catalogue"
    assert catalogued == stored  # reconciled: nothing stored is left out of the catalogue

    # the modality sends the study again, as it does after a failed transfer
    again = storescu(study.folder, node.port)
    assert again.returncode == 0, again.stdout + again.stderr
    poll(
        triaged_and_delivered(node, study.study_instance_uid),
        120,
        "the study to be triaged and its SR delivered",
        node,
    )
    stored, catalogued = node.sop_uids(study.study_instance_uid)
    assert stored == catalogued == set(files.values())
    assert node.catalogue.counts()["instances"] == len(files)  # each stored once
    assert_exactly_one_sr(node, pacs, study.study_instance_uid)


def storescu_successes(log: str, files: dict[Path, str]) -> set[str]:
    """SOPInstanceUIDs that storescu -v reports a success status for."""
    acknowledged: set[str] = set()
    current: Path | None = None
    for line in log.splitlines():
        if "Sending file: " in line:
            current = Path(line.split("Sending file: ", 1)[1].strip())
        elif "Received Store Response (Success)" in line and current is not None:
            acknowledged.add(files[current])
            current = None
    return acknowledged


def test_kill_while_triaging_triages_again_with_the_same_sr(
    node: ServeNode, pacs: HoldingPacs, tmp_path: Path
) -> None:
    study = one_study(tmp_path / "study")
    uid = study.study_instance_uid
    node.start()
    sent = storescu(study.folder, node.port)
    assert sent.returncode == 0, sent.stdout + sent.stderr

    def triaging() -> bool:
        state = node.catalogue.study_state(uid)
        return state is not None and state[0] == TRIAGING

    poll(triaging, 60, "the study to be claimed for triage", node)
    node.kill()
    state = node.catalogue.study_state(uid)
    assert state is not None and state[0] == TRIAGING, "the node was not killed mid-triage"
    interrupted_generation = state[1]

    node.start()
    poll(triaged_and_delivered(node, uid), 120, "the study to be triaged again", node)
    assert "interrupted by a restart will be triaged again" in node.log_tail(100_000)
    state = node.catalogue.study_state(uid)
    assert state == (TRIAGED, interrupted_generation + 1)
    assert_exactly_one_sr(node, pacs, uid)


def test_kill_while_delivering_delivers_once_after_the_restart(
    node: ServeNode, pacs: HoldingPacs, tmp_path: Path
) -> None:
    study = one_study(tmp_path / "study")
    uid = study.study_instance_uid
    pacs.hold.write_text("hold each SR before answering")
    node.start()
    sent = storescu(study.folder, node.port)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    expected = None

    def sr_in_flight() -> bool:
        nonlocal expected
        if node.catalogue.study_state(uid) is None:
            return False
        expected = expected or expected_sr_uid(node.catalogue, uid)
        return expected in pacs.arrived_uids()

    poll(sr_in_flight, 90, "the SR to reach the PACS", node)
    node.kill()  # the PACS has the SR in hand and has not answered yet
    pacs.release()  # it stores the SR now, and cannot tell the node
    (row,) = [r for r in node.catalogue.deliveries() if r.study_instance_uid == uid]
    assert row.state != DELIVERED, "the node was not killed mid-delivery"
    assert node.catalogue.study_state(uid) == (TRIAGED, 1)

    node.start()
    poll(triaged_and_delivered(node, uid), 90, "the SR to be delivered after the restart", node)
    assert_exactly_one_sr(node, pacs, uid)
