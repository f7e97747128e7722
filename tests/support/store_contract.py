"""What every object store backend must do, whatever keeps the bytes: one set of checks that
the local folder (tests/unit/store) and the S3 bucket (tests/integration/store) both pass.

A test module subclasses `StoreContract` as ``Test...`` and gives a ``store`` fixture: a new,
empty store for each test.
"""

from __future__ import annotations

import threading

import pytest

from triage.errors import StorageError
from triage.store import ObjectStore

INVALID_KEYS = [
    "../escape.dcm",
    "raw/../../escape.dcm",
    "raw/./x.dcm",
    "..",
    "/etc/passwd",
    "raw//double.dcm",
    "raw/with space.dcm",
    "raw/trailing/",
    "",
    "raw\\back.dcm",
    "raw/ümlaut.dcm",
    "raw/new\nline.dcm",
]


class StoreContract:
    def test_put_get_exists_delete(self, store: ObjectStore) -> None:
        key = "raw/1.2.3/1.2.3.4/1.2.3.4.5.dcm"
        assert not store.exists(key)
        store.put(key, b"\x00DICM payload\xff")
        assert store.exists(key)
        assert store.get(key) == b"\x00DICM payload\xff"
        store.delete(key)
        assert not store.exists(key)

    def test_empty_object(self, store: ObjectStore) -> None:
        store.put("empty.bin", b"")
        assert store.exists("empty.bin")
        assert store.get("empty.bin") == b""

    def test_get_missing_key_raises_storage_error(self, store: ObjectStore) -> None:
        with pytest.raises(StorageError, match="not in the object store"):
            store.get("raw/none.dcm")

    def test_delete_missing_key_is_quiet(self, store: ObjectStore) -> None:
        store.delete("raw/none.dcm")
        assert list(store.keys()) == []

    def test_keys_lists_every_object_and_filters_by_prefix(self, store: ObjectStore) -> None:
        for key in ("raw/a/1.dcm", "raw/a/2.dcm", "raw/b/3.dcm", "results/s/4.dcm", "top.txt"):
            store.put(key, key.encode())
        assert sorted(store.keys()) == [
            "raw/a/1.dcm",
            "raw/a/2.dcm",
            "raw/b/3.dcm",
            "results/s/4.dcm",
            "top.txt",
        ]
        assert sorted(store.keys("raw")) == ["raw/a/1.dcm", "raw/a/2.dcm", "raw/b/3.dcm"]
        assert sorted(store.keys("raw/a")) == ["raw/a/1.dcm", "raw/a/2.dcm"]
        assert list(store.keys("ra")) == []  # a prefix is a folder, not the start of a name
        assert list(store.keys("nothing/here")) == []

    def test_overwrite_replaces_the_whole_object(self, store: ObjectStore) -> None:
        key = "raw/s/e/i.dcm"
        store.put(key, b"A" * 100_000)
        store.put(key, b"B" * 10)
        assert store.get(key) == b"B" * 10
        assert list(store.keys()) == [key]

    def test_overwrite_is_atomic_for_concurrent_readers(self, store: ObjectStore) -> None:
        """A reader sees the old object or the new one, never a partial or empty one."""
        key = "raw/s/e/big.dcm"
        size = 1 << 20
        versions = [bytes([n]) * size for n in range(8)]
        store.put(key, versions[0])
        seen: list[bytes] = []
        stop = threading.Event()

        def read() -> None:
            while not stop.is_set():
                data = store.get(key)
                if len(data) != size or data.count(data[:1]) != size:
                    seen.append(data[:16])
                    return

        reader = threading.Thread(target=read)
        reader.start()
        try:
            for _ in range(3):
                for data in versions:
                    store.put(key, data)
        finally:
            stop.set()
            reader.join(10)
        assert seen == [], "a reader saw a partial object"
        assert store.get(key) == versions[-1]
        assert list(store.keys()) == [key]

    @pytest.mark.parametrize("key", INVALID_KEYS)
    def test_invalid_keys_are_refused(self, store: ObjectStore, key: str) -> None:
        for call in (
            lambda: store.put(key, b"x"),
            lambda: store.get(key),
            lambda: store.exists(key),
            lambda: store.delete(key),
        ):
            with pytest.raises(StorageError, match="not valid"):
                call()
        assert list(store.keys()) == []
