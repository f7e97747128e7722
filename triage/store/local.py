"""Object store: where received instances and produced SRs are kept, by key.

Keys look like ``raw/<study>/<series>/<sop>.dcm``. The local folder backend writes durably
(temporary file, fsync, rename, fsync of the folder) so that a write that returned is on disk.
It also writes in two steps (``stage``, then ``publish`` of several at once) so that writers
running at the same time share the fsync of a folder (`triage.receive.commit`).
`triage.store.s3.S3Store` implements the same small interface on an S3 bucket.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from triage.config_values import S3Access
from triage.errors import ConfigError, StorageError
from triage.store.keys import check_key


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes) -> None:
        """Write durably: when this returns, the object survives a crash or power loss."""

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def keys(self, prefix: str = "") -> Iterator[str]: ...


@dataclass(frozen=True)
class Staged:
    """An object written and fsynced under a temporary name beside its key, not yet in place."""

    key: str
    temporary: Path
    target: Path


@runtime_checkable
class StagingStore(ObjectStore, Protocol):
    """A store that can write in two steps: ``put`` is ``publish([stage(key, data)])``."""

    def stage(self, key: str, data: bytes) -> Staged: ...

    def publish(self, staged: Sequence[Staged]) -> list[StorageError | None]: ...


class LocalStore:
    """A folder on local disk (the embedded default)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the object store folder {self.root}: {exc}") from exc
        self._known_dirs: set[Path] = set()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _ensure_dir(self, folder: Path) -> None:
        if folder in self._known_dirs:
            return
        missing = []
        probe = folder
        while not probe.exists():
            missing.append(probe)
            probe = probe.parent
        folder.mkdir(parents=True, exist_ok=True)
        for created in reversed(missing):  # make the new folders themselves durable
            _fsync_dir(created.parent)
        self._known_dirs.add(folder)

    def put(self, key: str, data: bytes) -> None:
        (error,) = self.publish([self.stage(key, data)])
        if error is not None:
            raise error

    def stage(self, key: str, data: bytes) -> Staged:
        """Write ``data`` under a temporary name in its key's folder and fsync it; nothing is
        under ``key`` until ``publish``. StorageError when it cannot be written."""
        target = self.path(key)
        try:
            self._ensure_dir(target.parent)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            self._known_dirs.discard(target.parent)
            raise self._failed(key, exc) from exc
        return Staged(key, Path(tmp), target)

    def publish(self, staged: Sequence[Staged]) -> list[StorageError | None]:
        """Move staged objects under their keys, then fsync each folder once: when this
        returns, each object whose entry is None is durable under its key. A failed one is
        not in place (its temporary file is gone), or not durably so."""
        errors: list[StorageError | None] = [None] * len(staged)
        folders: dict[Path, list[int]] = {}
        for i, item in enumerate(staged):
            try:
                os.replace(item.temporary, item.target)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(item.temporary)
                self._known_dirs.discard(item.target.parent)
                errors[i] = self._failed(item.key, exc)
                continue
            folders.setdefault(item.target.parent, []).append(i)
        for folder, members in folders.items():
            try:
                _fsync_dir(folder)
            except OSError as exc:
                self._known_dirs.discard(folder)
                for i in members:
                    errors[i] = self._failed(staged[i].key, exc)
        return errors

    def _failed(self, key: str, exc: OSError) -> StorageError:
        return StorageError(f"cannot write {key} to {self.root}: {exc.strerror or exc}")

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"{key} is not in the object store {self.root}") from None
        except OSError as exc:
            raise StorageError(f"cannot read {key} from {self.root}: {exc}") from exc

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"cannot delete {key} from {self.root}: {exc}") from exc

    def keys(self, prefix: str = "") -> Iterator[str]:
        base = self.root / prefix if prefix else self.root
        if not base.exists():
            return
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.startswith(".incoming-"):
                    continue
                yield Path(dirpath, name).relative_to(self.root).as_posix()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_store(location: str, s3: S3Access | None = None) -> ObjectStore:
    """The store named by TRIAGE_STORE: a folder path, or s3://BUCKET[/PREFIX] on the server
    that ``s3`` (the TRIAGE_S3_* settings) describes, checked before the node starts."""
    if location.startswith("s3://"):
        from triage.store.s3 import open_s3_store  # minio is imported only for an S3 store

        return open_s3_store(location, s3)
    if re.match(r"^[a-z][a-z0-9+.-]*://", location):
        raise ConfigError(f"TRIAGE_STORE={location!r}: give a folder path or s3://BUCKET[/PREFIX]")
    return LocalStore(Path(location).expanduser())
