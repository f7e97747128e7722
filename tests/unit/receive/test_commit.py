"""Group commit (triage.receive.commit): handlers waiting at the same time share one commit,
and none returns before its instance is in place under its key and catalogued."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

import triage.store.local
from triage.catalogue import Catalogue, InstanceRecord
from triage.errors import StorageError
from triage.receive.commit import GroupCommit
from triage.store import LocalStore, ObjectStore


def record(n: int, study: str = "1.2.3") -> InstanceRecord:
    series = f"{study}.1"
    sop = f"{series}.{n}"
    return InstanceRecord(
        study_instance_uid=study,
        series_instance_uid=series,
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        key=f"raw/{study}/{series}/{sop}.dcm",
        size=4,
    )


class SlowCatalogue:
    """The real catalogue, each write taking a while (so that handlers pile up), and what each
    batch held."""

    def __init__(self, real: Catalogue, pause: float = 0.05) -> None:
        self.real = real
        self.pause = pause
        self.batches: list[list[str]] = []
        self.fail_with: Exception | None = None
        self.refuse: str | None = None  # a SOP instance UID the database refuses

    def record_instances(self, recs: Sequence[InstanceRecord]) -> list[bool]:
        time.sleep(self.pause)
        self.batches.append([r.sop_instance_uid for r in recs])
        if self.fail_with is not None:
            raise self.fail_with
        if self.refuse in {r.sop_instance_uid for r in recs}:
            raise ValueError("a value the database refuses")
        return self.real.record_instances(recs)

    def record_instance(self, rec: InstanceRecord) -> bool:
        return self.record_instances([rec])[0]


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture
def catalogue(tmp_path: Path) -> SlowCatalogue:
    return SlowCatalogue(Catalogue(f"sqlite:///{tmp_path / 'c.db'}"))


def keep_all(
    commits: GroupCommit, store: ObjectStore, catalogue: SlowCatalogue, n: int
) -> dict[int, object]:
    """``n`` handlers at once; what each got (True/False, or the exception)."""
    got: dict[int, object] = {}
    start = threading.Barrier(n)

    def handler(i: int) -> None:
        rec = record(i)
        start.wait()
        try:
            got[i] = commits.keep(store, catalogue, b"DICM", rec)
        except Exception as exc:
            got[i] = exc
            return
        # never answered before it is in place and catalogued
        if not store.exists(rec.key) or not catalogue.real.has_instance(rec.sop_instance_uid):
            got[i] = "answered before it was stored and catalogued"

    threads = [threading.Thread(target=handler, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return got


def test_handlers_waiting_together_share_commits(
    store: LocalStore, catalogue: SlowCatalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder_syncs: list[Path] = []
    real_fsync_dir = triage.store.local._fsync_dir
    monkeypatch.setattr(
        triage.store.local,
        "_fsync_dir",
        lambda folder: (folder_syncs.append(folder), real_fsync_dir(folder))[1],
    )
    commits = GroupCommit()
    got = keep_all(commits, store, catalogue, 8)
    assert got == dict.fromkeys(range(8), True)
    assert catalogue.real.counts()["instances"] == 8
    assert sorted(uid for batch in catalogue.batches for uid in batch) == sorted(
        record(i).sop_instance_uid for i in range(8)
    )
    assert len(catalogue.batches) < 8, "no two handlers shared a commit"
    series_folder = store.path(record(0).key).parent
    assert folder_syncs.count(series_folder) == len(catalogue.batches)  # once per batch
    assert not list(store.root.rglob(".incoming-*"))
    assert commits.instances == 8 and commits.batches == len(catalogue.batches)


def test_one_handler_alone_commits_at_once(store: LocalStore, catalogue: SlowCatalogue) -> None:
    commits = GroupCommit()
    assert commits.keep(store, catalogue, b"DICM", record(1)) is True
    assert commits.keep(store, catalogue, b"DICM", record(1)) is False  # stored once
    assert catalogue.batches == [[record(1).sop_instance_uid]] * 2


def test_a_failed_catalogue_write_fails_its_whole_batch_and_keeps_the_bytes(
    store: LocalStore, catalogue: SlowCatalogue
) -> None:
    catalogue.fail_with = StorageError("catalogue write failed: database is locked")
    got = keep_all(GroupCommit(), store, catalogue, 4)
    assert all(isinstance(v, StorageError) for v in got.values())
    assert catalogue.real.counts()["instances"] == 0
    assert all(store.exists(record(i).key) for i in range(4))  # the sender's retry catalogues


def test_a_record_the_database_refuses_fails_only_its_own_instance(
    store: LocalStore, catalogue: SlowCatalogue
) -> None:
    catalogue.refuse = record(2).sop_instance_uid
    got = keep_all(GroupCommit(), store, catalogue, 6)
    assert isinstance(got.pop(2), ValueError)
    assert got == dict.fromkeys([0, 1, 3, 4, 5], True)
    assert catalogue.real.counts()["instances"] == 5


def test_a_store_that_cannot_write_answers_its_own_handler(
    tmp_path: Path, catalogue: SlowCatalogue
) -> None:
    root = tmp_path / "broken"
    broken = LocalStore(root)
    root.rmdir()
    root.write_bytes(b"the store's folder is now a file")
    with pytest.raises(StorageError, match="cannot write"):
        GroupCommit().keep(broken, catalogue, b"DICM", record(1))
    assert catalogue.batches == []


def test_stores_that_write_in_one_step_share_the_catalogue_transaction(
    store: LocalStore, catalogue: SlowCatalogue
) -> None:
    class OneStep:  # as S3Store: put is durable when it returns; no stage or publish
        def __init__(self) -> None:
            self.put_keys: list[str] = []

        def put(self, key: str, data: bytes) -> None:
            store.put(key, data)
            self.put_keys.append(key)

        def exists(self, key: str) -> bool:
            return store.exists(key)

    one_step = OneStep()
    got = keep_all(GroupCommit(), one_step, catalogue, 4)  # type: ignore[arg-type]
    assert got == dict.fromkeys(range(4), True)
    assert sorted(one_step.put_keys) == sorted(record(i).key for i in range(4))
