"""Dependency faults made real, then counted: a full and a read-only object store (a tmpfs
mounted for the test), models that run out of memory, fail or cannot load (real bundles), a
catalogue locked by another SQLite connection, and a PACS killed while it holds an SR.

Counting rule for the receiver: acknowledged (status 0x0000 heard by the sender) == catalogued,
and every catalogued instance is stored; after the fault clears, a resend stores everything once.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydicom
import pytest
import torch
from monai.bundle import ConfigParser
from pydicom.dataset import Dataset
from pynetdicom import AE
from support.expectations import expected_sr_uid
from support.factories import phantom_ct_series
from support.holding_pacs import HoldingPacs
from support.modality import storescu
from support.nodes import node_env, running_node
from support.orthanc import ORTHANC, srs_in_orthanc
from support.waiting import wait_until

from triage.app.demo import write_demo_studies
from triage.catalogue import DELIVERED, PENDING, TRIAGED, TRIAGING, Catalogue
from triage.config import PROJECT_ROOT
from triage.dimse import OUT_OF_RESOURCES, SUCCESS
from triage.errors import ModelError, StorageError
from triage.receive.receiver import Receiver
from triage.report.sr_read import read_triage_sr
from triage.results import Priority
from triage.store import LocalStore

DEADLINE = 60.0


# -- the sender, the receiver and what they count --------------------------------------------


def send(port: int, datasets: Sequence[Dataset], statuses: list[int] | None = None) -> list[int]:
    """C-STORE each data set over one association (pynetdicom as the modality); each status is
    appended to ``statuses`` as it is heard."""
    heard: list[int] = [] if statuses is None else statuses
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class)
    assoc = ae.associate("127.0.0.1", port, ae_title="TRIAGE")
    assert assoc.is_established, "the receiver refused the association"
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            heard.append(int(status.Status) if "Status" in status else 0xFFFF)
    finally:
        assoc.release()
    return heard


def series(tag: str, slices: int, **overrides: Any) -> list[Dataset]:
    return phantom_ct_series(tag, 0, (64, 64, slices), (3.5, 3.5, 5.0), **overrides)


def acknowledged(datasets: Sequence[Dataset], statuses: Sequence[int]) -> set[str]:
    return {str(ds.SOPInstanceUID) for ds, s in zip(datasets, statuses, strict=True) if s == 0}


def counted(receiver: Receiver) -> tuple[set[str], set[str]]:
    """SOPInstanceUIDs (in the object store, in the catalogue)."""
    stored = {Path(k).stem for k in receiver.store.keys("raw/")}
    catalogued = {Path(k).stem for k in receiver.catalogue.catalogued_keys("raw/")}
    return stored, catalogued


@contextmanager
def running_receiver(store_root: Path, db: Path) -> Iterator[Receiver]:
    catalogue = Catalogue(f"sqlite:///{db}")
    receiver = Receiver(LocalStore(store_root), catalogue, "TRIAGE")
    receiver.start("127.0.0.1", 0)
    try:
        yield receiver
    finally:
        receiver.stop()
        catalogue.close()


# -- object store: full, read-only ------------------------------------------------------------


def mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB file system (tmpfs) for the object store; skipped where mounting is not
    permitted (not root, or a container without CAP_SYS_ADMIN)."""
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    point = tmp_path / "disk"
    point.mkdir()
    done = mount("-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(point))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield point
    finally:
        if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True)


def fill(disk: Path, leave_bytes: int) -> Path:
    """Fill the file system, leaving about ``leave_bytes`` free."""
    stat = os.statvfs(disk)
    filler = disk / "filler"
    filler.write_bytes(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave_bytes))
    return filler


@pytest.mark.integration
def test_full_store_answers_a700_and_a_resend_stores_everything(
    small_disk: Path, tmp_path: Path
) -> None:
    instances = series("test_faults.full", 30)  # about 10 KB each
    with running_receiver(small_disk / "store", tmp_path / "catalogue.db") as receiver:
        filler = fill(small_disk, leave_bytes=60_000)
        statuses = send(receiver.port, instances)
        acked = acknowledged(instances, statuses)
        assert set(statuses) == {SUCCESS, OUT_OF_RESOURCES}, "the disk did not fill up mid-series"
        stored, catalogued = counted(receiver)
        assert acked == catalogued == stored
        assert not [p for p in small_disk.rglob(".incoming-*")], "a partial write was left"

        filler.unlink()  # the operator frees space; the sender sends the series again
        assert send(receiver.port, instances) == [SUCCESS] * len(instances)
        stored, catalogued = counted(receiver)
        everything = {str(ds.SOPInstanceUID) for ds in instances}
        assert stored == catalogued == everything
        assert receiver.catalogue.counts()["instances"] == len(instances)
        assert receiver.stats.stored == len(instances)
        assert receiver.stats.duplicates == len(acked)


@pytest.mark.integration
def test_read_only_store_answers_a700_and_a_resend_stores_everything(
    small_disk: Path, tmp_path: Path
) -> None:
    instances = series("test_faults.readonly", 12)
    with running_receiver(small_disk / "store", tmp_path / "catalogue.db") as receiver:
        assert send(receiver.port, instances[:4]) == [SUCCESS] * 4
        remount = mount("-o", "remount,ro", str(small_disk))
        assert remount.returncode == 0, remount.stderr
        try:
            assert send(receiver.port, instances) == [OUT_OF_RESOURCES] * len(instances)
            stored, catalogued = counted(receiver)
            assert stored == catalogued == acknowledged(instances[:4], [SUCCESS] * 4)
        finally:
            remount = mount("-o", "remount,rw", str(small_disk))
            assert remount.returncode == 0, remount.stderr
        assert send(receiver.port, instances) == [SUCCESS] * len(instances)
        stored, catalogued = counted(receiver)
        assert stored == catalogued == {str(ds.SOPInstanceUID) for ds in instances}
        assert receiver.stats.failed == len(instances)


# -- catalogue: locked by another connection ----------------------------------------------------


@contextmanager
def write_lock(db: Path) -> Iterator[None]:
    """Another SQLite connection holding the database's write lock (BEGIN EXCLUSIVE), as a
    backup tool, an operator's sqlite3 shell or a stuck process would."""
    other = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


def sending(port: int, datasets: Sequence[Dataset], statuses: list[int]) -> threading.Thread:
    thread = threading.Thread(target=send, args=(port, datasets, statuses), daemon=True)
    thread.start()
    return thread


@pytest.mark.integration
def test_instances_arriving_while_the_catalogue_is_locked_are_acknowledged_after(
    tmp_path: Path,
) -> None:
    """A lock shorter than the receiver's wait (Catalogue.record_lock_wait_seconds, 8 s): the
    C-STORE answers wait for it, then every instance is acknowledged, stored and catalogued."""
    instances = series("test_faults.locked", 10)
    db = tmp_path / "catalogue.db"
    with running_receiver(tmp_path / "store", db) as receiver:
        statuses: list[int] = []
        with write_lock(db):
            sender = sending(receiver.port, instances, statuses)
            wait_until(
                lambda: bool(counted(receiver)[0]), DEADLINE, "the first instance to be stored"
            )
            time.sleep(2)  # hold the lock a while longer
            assert statuses == [], "an instance was acknowledged before it was catalogued"
        sender.join(DEADLINE)
        assert statuses == [SUCCESS] * len(instances)
        stored, catalogued = counted(receiver)
        assert stored == catalogued == {str(ds.SOPInstanceUID) for ds in instances}


@pytest.mark.integration
def test_a_lock_longer_than_the_wait_answers_a700_and_a_resend_catalogues(
    tmp_path: Path,
) -> None:
    """Past the receiver's bound the answer is 0xA700 (the sender retries on it); the bytes stay
    in the store, the catalogue holds exactly what was acknowledged."""
    instances = series("test_faults.lockedlong", 10)
    db = tmp_path / "catalogue.db"
    with running_receiver(tmp_path / "store", db) as receiver:
        receiver.catalogue.record_lock_wait_seconds = 1.0  # the bound, shortened for the test
        statuses: list[int] = []
        with write_lock(db):
            sender = sending(receiver.port, instances, statuses)
            wait_until(lambda: len(statuses) >= 2, DEADLINE, "two answers while the lock is held")
            assert set(statuses) == {OUT_OF_RESOURCES}
        sender.join(DEADLINE)
        acked = acknowledged(instances, statuses)
        assert statuses[0] == OUT_OF_RESOURCES and len(acked) < len(instances)
        stored, catalogued = counted(receiver)
        assert catalogued == acked
        assert catalogued <= stored  # refused instances' bytes stay stored, never acknowledged
        assert send(receiver.port, instances) == [SUCCESS] * len(instances)
        stored, catalogued = counted(receiver)
        assert stored == catalogued == {str(ds.SOPInstanceUID) for ds in instances}


# -- the node: models that fail, a locked catalogue while triaging, a PACS that dies -----------


@contextmanager
def node_for(home: Path, pacs: str, models: Path | None = None) -> Iterator[Any]:
    """The node in this process with the real Prefect flows (the session's test harness)."""
    env = node_env(
        home,
        pacs,
        QUIET_SECONDS="1",
        DELIVERY_BACKOFF_SECONDS="0.5",
        DELIVERY_MAX_TRIES="50",
        MODELS=str(models or PROJECT_ROOT / "models"),
    )
    with running_node(env) as node:
        yield node


def state_of(node: Any, study_uid: str) -> str | None:
    state = node.svc.catalogue.study_state(study_uid)
    return None if state is None else str(state[0])


def delivered(node: Any, study_uid: str) -> bool:
    rows = [r for r in node.svc.catalogue.deliveries() if r.study_instance_uid == study_uid]
    return bool(rows) and all(r.state == DELIVERED for r in rows)


def head_study(root: Path) -> Any:
    (study,) = write_demo_studies(
        root, count=1, unanalysable=0, shape=(128, 128, 24), spacing=(1.8, 1.8, 5.0)
    )
    return study


def bundle(
    root: Path, name: str, body_part: str, network: dict[str, Any], weights: bytes | None = None
) -> None:
    """A model bundle in the MONAI layout that runs on one body part's CT series."""
    (root / name / "configs").mkdir(parents=True)
    (root / name / "models").mkdir()
    (root / name / "configs" / "metadata.json").write_text(
        json.dumps({"name": name, "version": "0.1.0"})
    )
    (root / name / "configs" / "inference.json").write_text(json.dumps({"network_def": network}))
    options = {
        "task": "classification",
        "series": {"modality": ["CT"], "body_part": [body_part], "min_slices": 8},
        "input": {"pixdim": [8, 8, 8], "spatial_size": [32, 32, 16], "window": [0, 100]},
        "finding": {"value": "1386000", "scheme": "SCT", "meaning": "Intracranial hemorrhage"},
        "threshold": 0.5,
    }
    (root / name / "triage.json").write_text(json.dumps(options))
    pt = root / name / "models" / "model.pt"
    if weights is None:  # the network's own state dict, built as the registry builds it
        parser = ConfigParser({"network_def": network})
        torch.save(parser.get_parsed_content("network_def", instantiate=True).state_dict(), pt)
    else:
        pt.write_bytes(weights)


@pytest.mark.integration
@pytest.mark.slow
def test_a_failing_model_leaves_its_study_not_analysed_and_the_others_go_on(
    tmp_path: Path, orthanc: Any, prefect_harness: None
) -> None:
    """Three bundles that fail for real next to the shipped model, each on its own body part:
    one whose network asks the CPU allocator for more memory than the machine's address space
    (PyTorch raises its out-of-memory RuntimeError; nothing is really allocated), one whose
    weights file is not a weights file, one whose network does not fit its input."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "ich_classifier").symlink_to(PROJECT_ROOT / "models" / "ich_classifier")
    # 32 x 32 x 16 voxels upsampled 2000 times a side: 5e14 bytes, over the 2**47 of user space
    bundle(models, "oom_model", "ABDOMEN", {"_target_": "torch.nn.Upsample", "scale_factor": 2000})
    bundle(
        models,
        "unloadable",
        "CHEST",
        {"_target_": "torch.nn.Linear", "in_features": 16, "out_features": 1},
        weights=b"these are not weights",
    )
    bundle(
        models,
        "misfit",
        "PELVIS",
        {"_target_": "torch.nn.Linear", "in_features": 7, "out_features": 1},
    )
    failing = {
        part: series(f"test_faults.model.{part}", 12, body_part=part, series_description=part)
        for part in ("ABDOMEN", "CHEST", "PELVIS")
    }
    head = head_study(tmp_path / "studies")
    with node_for(tmp_path / "home", orthanc.node, models) as node:
        for instances in failing.values():  # the failing studies first: they must not block
            assert send(node.port, instances) == [SUCCESS] * len(instances)
        assert storescu(head.folder, node.port).returncode == 0
        uids = {part: str(instances[0].StudyInstanceUID) for part, instances in failing.items()}

        def all_done() -> bool:
            states = [state_of(node, uid) for uid in uids.values()]
            return all(s == "not analysed" for s in states) and delivered(
                node, head.study_instance_uid
            )

        wait_until(all_done, 120, "every study finished and the head study's SR delivered")
        rows = {r.study_instance_uid: r for r in node.svc.catalogue.worklist()}
        reasons = {part: rows[uid].reason or "" for part, uid in uids.items()}
        assert "oom_model: model oom_model ran out of memory on cpu" in reasons["ABDOMEN"]
        assert "unloadable: " in reasons["CHEST"]
        assert "model.pt cannot be read as PyTorch weights" in reasons["CHEST"]
        assert "misfit: model misfit failed on this input" in reasons["PELVIS"]
        failed_model = {"ABDOMEN": "oom_model", "CHEST": "unloadable", "PELVIS": "misfit"}
        for part, uid in uids.items():
            assert rows[uid].priority == "not analysed", part
            # one document, from the model that applies to the study and failed on it; the
            # models for other body parts have nothing to say about it
            (sr,) = srs_in_orthanc(orthanc, uid)
            (said,) = read_triage_sr(pydicom.dcmread(io.BytesIO(orthanc.instance_file(sr["ID"]))))
            assert said.priority is Priority.NOT_ANALYSED, part
            assert said.model_name == failed_model[part]
            assert said.reason and said.reason in (rows[uid].reason or "")
        assert rows[head.study_instance_uid].state == TRIAGED
        srs = srs_in_orthanc(orthanc, head.study_instance_uid)
        assert [i["MainDicomTags"]["SOPInstanceUID"] for i in srs] == [
            expected_sr_uid(node.svc.catalogue, head.study_instance_uid)
        ]


@pytest.mark.integration
@pytest.mark.slow
def test_a_catalogue_locked_while_watching_and_triaging_loses_nothing(
    tmp_path: Path, orthanc: Any, prefect_harness: None
) -> None:
    """The watcher's claim and the triage run's writes wait for another connection's write lock
    (a few seconds, shorter than the catalogue's wait) and go on when it is released."""
    study = head_study(tmp_path / "studies")
    uid = study.study_instance_uid
    with node_for(tmp_path / "home", orthanc.node) as node:
        db = node.svc.settings.home / "catalogue.db"
        sent = storescu(study.folder, node.port)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        with write_lock(db):  # taken well within the quiet period (1 s)
            time.sleep(3)  # past the quiet period: the watcher's claim waits for the lock
            assert state_of(node, uid) == "receiving"
        wait_until(lambda: state_of(node, uid) == TRIAGED and delivered(node, uid), 90, "triage")

        assert node.svc.catalogue.reopen(uid)  # triage it again, and lock it mid-run
        wait_until(lambda: state_of(node, uid) == TRIAGING, 30, "the second run to start")
        with write_lock(db):
            time.sleep(3)
            assert state_of(node, uid) == TRIAGING
        wait_until(lambda: state_of(node, uid) == TRIAGED and delivered(node, uid), 90, "triage")
        srs = srs_in_orthanc(orthanc, uid)
        assert [i["MainDicomTags"]["SOPInstanceUID"] for i in srs] == [
            expected_sr_uid(node.svc.catalogue, uid)
        ]


def test_flow_tasks_retry_catalogue_and_store_failures_only() -> None:
    """Another try helps a locked database or a full disk (the locked-catalogue test below
    sees the report task retried for real); it does not help a model or input error."""
    from prefect.states import Failed

    from flows.triage import transient

    locked = StorageError("catalogue write failed: database is locked")
    assert transient(None, None, Failed(data=locked))
    assert not transient(None, None, Failed(data=ModelError("model m failed on this input")))
    assert not transient(None, None, Failed(data=ValueError("the SR cannot be built")))


class Messages(logging.Handler):
    """The messages one logger emits, for a test to wait on."""

    def __init__(self, logger: str) -> None:
        super().__init__(logging.ERROR)
        self.logger = logging.getLogger(logger)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record.getMessage())

    def __enter__(self) -> Messages:
        self.logger.addHandler(self)
        return self

    def __exit__(self, *_: object) -> None:
        self.logger.removeHandler(self)


@pytest.mark.integration
@pytest.mark.slow
def test_a_run_failing_on_a_locked_catalogue_ends_not_analysed_and_the_worker_goes_on(
    tmp_path: Path, orthanc: Any, prefect_harness: None
) -> None:
    """A lock held longer than the catalogue's wait (shortened to 1 s here): the run's writes
    fail (the report task is retried, then the flow fails), and recording the failure meets the
    lock too. The study must still end as not analysed once the lock goes, not stay in triaging,
    and the node's single triage worker must live on for the next study."""
    first, second = write_demo_studies(
        tmp_path / "studies",
        count=2,
        unanalysable=0,
        shape=(128, 128, 24),
        spacing=(1.8, 1.8, 5.0),
    )
    uid = first.study_instance_uid
    with node_for(tmp_path / "home", orthanc.node) as node, Messages("triage.app.node") as log:
        node.svc.catalogue.lock_wait_seconds = 1.0
        db = node.svc.settings.home / "catalogue.db"
        assert storescu(first.folder, node.port).returncode == 0
        wait_until(lambda: state_of(node, uid) == TRIAGING, DEADLINE, "the run to start")
        with write_lock(db):
            wait_until(lambda: "triage run failed" in log.seen, DEADLINE, "the run to fail")
            time.sleep(2)  # the first tries to record the failure meet the lock as well
        wait_until(
            lambda: state_of(node, uid) == "not analysed", DEADLINE, "the failure to be recorded"
        )
        (row,) = [r for r in node.svc.catalogue.worklist() if r.study_instance_uid == uid]
        assert "StorageError" in (row.reason or "") and "triage rerun" in (row.reason or "")

        assert storescu(second.folder, node.port).returncode == 0
        other = second.study_instance_uid
        wait_until(
            lambda: state_of(node, other) == TRIAGED and delivered(node, other), DEADLINE, "triage"
        )
        srs = srs_in_orthanc(orthanc, other)
        assert [i["MainDicomTags"]["SOPInstanceUID"] for i in srs] == [
            expected_sr_uid(node.svc.catalogue, other)
        ]


@pytest.fixture
def holding_pacs(tmp_path: Path) -> Iterator[HoldingPacs]:
    if ORTHANC is None:
        pytest.skip("Orthanc is not installed (Debian package orthanc)")
    pacs = HoldingPacs.start(tmp_path / "pacs", "DYINGPACS")
    yield pacs
    pacs.stop()


@pytest.mark.integration
@pytest.mark.slow
def test_a_pacs_killed_while_it_holds_the_sr_gets_it_once_when_back(
    tmp_path: Path, holding_pacs: HoldingPacs, prefect_harness: None
) -> None:
    """What test_delivery_resilience does not cover: the PACS dies (SIGKILL) in the middle of
    the association, after it has the SR and before it answers."""
    pacs = holding_pacs
    study = head_study(tmp_path / "studies")
    uid = study.study_instance_uid
    pacs.hold.write_text("hold")
    with node_for(tmp_path / "home", pacs.orthanc.node) as node:
        assert storescu(study.folder, node.port).returncode == 0
        wait_until(lambda: bool(pacs.arrived_uids()), 90, "the SR to reach the PACS")
        assert pacs.orthanc.process is not None
        pacs.orthanc.process.send_signal(signal.SIGKILL)
        pacs.orthanc.process.wait(30)
        pacs.orthanc.process = None
        pacs.hold.unlink()  # when it is back, it takes SRs at once

        def sr_rows() -> list[Any]:
            return [r for r in node.svc.catalogue.deliveries() if r.kind == "sr"]

        def failed_once() -> bool:
            rows = sr_rows()
            return len(rows) == 1 and rows[0].attempts >= 1

        wait_until(failed_once, DEADLINE, "the failed delivery to be recorded")
        (row,) = sr_rows()
        assert row.state == PENDING and row.last_error
        assert state_of(node, uid) == TRIAGED  # the worklist has the priority meanwhile

        pacs.orthanc.start(extra=pacs.config)
        wait_until(lambda: delivered(node, uid), 90, "delivery once the PACS is back")
        srs = srs_in_orthanc(pacs.orthanc, uid)
        assert [i["MainDicomTags"]["SOPInstanceUID"] for i in srs] == [
            expected_sr_uid(node.svc.catalogue, uid)
        ]
