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
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select
from support.expectations import expected_sr_uid
from support.holding_pacs import HoldingPacs
from support.modality import storescu
from support.orthanc import ORTHANC, srs_in_orthanc
from support.paths import require
from support.serve import ServeNode
from support.waiting import wait_until

from triage.app.demo import DemoStudy, write_demo_studies
from triage.catalogue import DELIVERED, TRIAGED, TRIAGING, Result
from triage.report.sr_read import read_triage_sr

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HoldingPacs]:
    if ORTHANC is None:
        pytest.skip("Orthanc is not installed (Debian package orthanc)")
    pacs = HoldingPacs.start(tmp_path_factory.mktemp("crash-pacs"), "CRASHPACS")
    yield pacs
    pacs.stop()


@pytest.fixture
def node(tmp_path: Path, pacs: HoldingPacs, prefect_api: str) -> Iterator[ServeNode]:
    serve = ServeNode(tmp_path / "home", pacs.orthanc.node, prefect_api)
    yield serve
    serve.stop()
    pacs.release()


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
    srs_queued = [(r.sop_instance_uid, r.state) for r in rows if r.kind == "sr"]
    assert srs_queued == [(expected, DELIVERED)]
    assert all(r.state == DELIVERED for r in rows)  # and its KOS, when it is positive
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
        wait_until(
            lambda: len(node.sop_uids(study.study_instance_uid)[1]) >= 3,
            60,
            "the first instances to be catalogued",
            interval=0.02,
            detail=node.log_tail,
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
    wait_until(
        triaged_and_delivered(node, study.study_instance_uid),
        120,
        "the study to be triaged and its SR delivered",
        interval=0.02,
        detail=node.log_tail,
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

    wait_until(
        triaging, 60, "the study to be claimed for triage", interval=0.02, detail=node.log_tail
    )
    node.kill()
    state = node.catalogue.study_state(uid)
    assert state is not None and state[0] == TRIAGING, "the node was not killed mid-triage"
    interrupted_generation = state[1]

    node.start()
    wait_until(
        triaged_and_delivered(node, uid),
        120,
        "the study to be triaged again",
        interval=0.02,
        detail=node.log_tail,
    )
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
        return expected is not None and expected in pacs.arrived_uids()

    wait_until(sr_in_flight, 90, "the SR to reach the PACS", interval=0.02, detail=node.log_tail)
    node.kill()  # the PACS has the SR in hand and has not answered yet
    pacs.release()  # it stores the SR now, and cannot tell the node
    (row,) = [
        r for r in node.catalogue.deliveries() if r.study_instance_uid == uid and r.kind == "sr"
    ]
    assert row.state != DELIVERED, "the node was not killed mid-delivery"
    assert node.catalogue.study_state(uid) == (TRIAGED, 1)

    node.start()
    wait_until(
        triaged_and_delivered(node, uid),
        90,
        "the SR to be delivered after the restart",
        interval=0.02,
        detail=node.log_tail,
    )
    assert_exactly_one_sr(node, pacs, uid)
