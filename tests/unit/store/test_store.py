"""The local object store: the checks every backend passes, durable writes on disk, and clear
refusals."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.store_contract import INVALID_KEYS, StoreContract

from triage.config_values import S3Access
from triage.errors import ConfigError, StorageError
from triage.store import LocalStore, check_key, instance_key, open_store


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


class TestLocalStore(StoreContract):
    """The checks every backend passes (tests/support/store_contract.py)."""


def test_objects_are_files_under_the_root(store: LocalStore) -> None:
    key = "raw/1.2.3/1.2.3.4/1.2.3.4.5.dcm"
    store.put(key, b"\x00DICM payload\xff")
    assert (store.root / key).read_bytes() == b"\x00DICM payload\xff"
    store.delete(key)
    assert not (store.root / key).exists()


def test_keys_skip_incoming_temporary_files(store: LocalStore) -> None:
    store.put("raw/x.dcm", b"x")
    (store.root / "raw" / ".incoming-abc.part").write_bytes(b"half")
    assert list(store.keys()) == ["raw/x.dcm"]


def test_overwrite_leaves_no_temporary_files(
    store: LocalStore,
) -> None:
    key = "raw/s/e/i.dcm"
    store.put(key, b"A" * 100_000)
    store.put(key, b"B" * 10)
    assert store.get(key) == b"B" * 10
    leftovers = [p for p in store.root.rglob("*") if p.name.startswith(".incoming-")]
    assert leftovers == []


def test_failed_write_leaves_no_temporary_file_and_keeps_the_old_object(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "raw/s/e/i.dcm"
    store.put(key, b"old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StorageError, match="No space left on device"):
        store.put(key, b"new")
    monkeypatch.undo()
    assert store.get(key) == b"old"
    assert not [p for p in store.root.rglob(".incoming-*")]


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_invalid_keys_are_refused_and_nothing_escapes_the_root(store: LocalStore, key: str) -> None:
    with pytest.raises(StorageError, match="not valid"):
        check_key(key)
    with pytest.raises(StorageError, match="not valid"):
        store.put(key, b"x")
    assert not (store.root.parent / "escape.dcm").exists()


def test_instance_key_is_stable() -> None:
    assert instance_key("1.2", "1.2.3", "1.2.3.4") == "raw/1.2/1.2.3/1.2.3.4.dcm"
    with pytest.raises(StorageError):
        instance_key("1.2", "../x", "1.2.3.4")


def test_write_under_a_file_raises_a_readable_storage_error(store: LocalStore) -> None:
    (store.root / "raw").write_bytes(b"I am a file, not a folder")
    with pytest.raises(StorageError) as info:
        store.put("raw/study/series/i.dcm", b"data")
    message = str(info.value)
    assert "raw/study/series/i.dcm" in message
    assert str(store.root) in message
    assert "Traceback" not in message
    # the store still works elsewhere, and retrying after a fix succeeds
    store.put("other/i.dcm", b"ok")
    assert store.get("other/i.dcm") == b"ok"
    (store.root / "raw").unlink()
    store.put("raw/study/series/i.dcm", b"data")
    assert store.get("raw/study/series/i.dcm") == b"data"


def test_write_after_the_folder_vanished_fails_cleanly_then_recovers(store: LocalStore) -> None:
    """A folder removed behind the store's back: an error (never a silent loss), then healed."""
    store.put("raw/a/1.dcm", b"1")
    (store.root / "raw" / "a" / "1.dcm").unlink()
    (store.root / "raw" / "a").rmdir()
    try:
        store.put("raw/a/2.dcm", b"2")
    except StorageError as exc:  # the known-folder cache is dropped on failure
        assert "raw/a/2.dcm" in str(exc)
        store.put("raw/a/2.dcm", b"2")
    assert store.get("raw/a/2.dcm") == b"2"


def test_store_root_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="cannot create the object store folder"):
        LocalStore(blocker / "store")


def test_store_root_under_proc_cannot_be_written() -> None:
    with pytest.raises(StorageError):
        LocalStore(Path("/proc/triage-test-store"))


def test_read_of_a_folder_raises_storage_error(store: LocalStore) -> None:
    store.put("raw/a/1.dcm", b"1")
    with pytest.raises(StorageError, match="cannot read raw/a"):
        store.get("raw/a")


def test_open_store_gives_a_local_folder(tmp_path: Path) -> None:
    opened = open_store(str(tmp_path / "objects"))
    assert isinstance(opened, LocalStore)
    assert (tmp_path / "objects").is_dir()
    opened.put("k.bin", b"v")
    assert (tmp_path / "objects" / "k.bin").read_bytes() == b"v"


@pytest.mark.parametrize("url", ["minio://host/bucket", "file:///tmp/x"])
def test_open_store_refuses_other_urls(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_store(url)
    assert "TRIAGE_STORE" in str(info.value)
    assert url in str(info.value)


def test_open_store_of_an_s3_url_needs_the_endpoint() -> None:
    with pytest.raises(ConfigError, match="TRIAGE_S3_ENDPOINT"):
        open_store("s3://scans/triage", None)


@pytest.mark.parametrize("url", ["s3://", "s3://UPPER", "s3://a", "s3://bad_name/x", "s3://ok/a b"])
def test_open_store_refuses_what_cannot_be_a_bucket_and_prefix(url: str) -> None:
    access = S3Access("http://127.0.0.1:9", "key", "do-not-print-me")
    with pytest.raises(ConfigError) as info:
        open_store(url, access)
    assert "TRIAGE_STORE" in str(info.value)
    assert "do-not-print-me" not in str(info.value)


def test_staged_objects_appear_only_when_published(store: LocalStore) -> None:
    first = store.stage("raw/s/e/1.dcm", b"one")
    second = store.stage("raw/s/e/2.dcm", b"two")
    assert not store.exists("raw/s/e/1.dcm")
    assert list(store.keys()) == []  # the temporary files are not objects
    assert first.temporary.read_bytes() == b"one"
    assert store.publish([first, second]) == [None, None]
    assert store.get("raw/s/e/1.dcm") == b"one"
    assert store.get("raw/s/e/2.dcm") == b"two"
    assert not [p for p in store.root.rglob(".incoming-*")]


def test_a_publish_that_fails_for_one_object_keeps_the_others(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = store.stage("raw/s/e/1.dcm", b"one")
    bad = store.stage("raw/s/e/2.dcm", b"two")
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        if str(dst).endswith("2.dcm"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    first, second = store.publish([good, bad])
    monkeypatch.undo()
    assert first is None
    assert isinstance(second, StorageError) and "No space left on device" in str(second)
    assert store.get("raw/s/e/1.dcm") == b"one"
    assert not store.exists("raw/s/e/2.dcm")
    assert not [p for p in store.root.rglob(".incoming-*")]
