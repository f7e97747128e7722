"""Group commit: instances received at the same time on different associations share the
folder fsyncs and the catalogue transaction that make them durable.

Each C-STORE handler writes and fsyncs its own instance under a temporary name (in its own
thread: fsyncs in flight together share the file system's journal commits), then joins the
group. One of the waiting handlers commits for all that are waiting: it moves their files in
place, fsyncs each folder once and catalogues all of them in one transaction; then each
handler answers its own C-STORE. No handler answers before its instance is durable under its
key and catalogued; a failure is that instance's (or that batch's) StorageError, answered
0xA700 so the sender retries. With one association a batch is one instance, committed by its
own handler without waiting for anyone.

A store that cannot write in two steps (S3: an object is durable when its PUT returns) is
written by each handler; only the catalogue transaction is shared.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from triage.catalogue import InstanceRecord
from triage.errors import StorageError
from triage.store import ObjectStore, Staged, StagingStore

log = logging.getLogger(__name__)


class RecordsInstances(Protocol):
    """The part of the catalogue a commit writes to."""

    def record_instances(self, recs: Sequence[InstanceRecord]) -> list[bool]: ...

    def record_instance(self, rec: InstanceRecord) -> bool: ...


@dataclass(eq=False)
class _Job:
    record: InstanceRecord
    store: ObjectStore
    catalogue: RecordsInstances
    staged: Staged | None
    wake: threading.Event = field(default_factory=threading.Event)
    leads: bool = False  # this job's handler is to commit the next batch
    finished: bool = False  # committed: ``new`` or ``error`` says how
    new: bool = False
    error: BaseException | None = None


class GroupCommit:
    """Commits instances for the handlers that wait on it (see the module's docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[_Job] = []
        self._committing = False
        self.batches = 0  # commits made, and the instances they held (diagnostics)
        self.instances = 0

    def keep(
        self, store: ObjectStore, catalogue: RecordsInstances, data: bytes, record: InstanceRecord
    ) -> bool:
        """Store ``data`` durably under ``record.key`` and catalogue it; True when new, False
        when it was catalogued before (stored again, once). StorageError when it is not
        durable and catalogued (nothing of this instance is then catalogued)."""
        if isinstance(store, StagingStore):
            staged: Staged | None = store.stage(record.key, data)
        else:
            store.put(record.key, data)
            staged = None
        job = _Job(record, store, catalogue, staged)
        with self._lock:
            self._waiting.append(job)
            if not self._committing:
                self._committing = job.leads = True
        while not job.finished:
            if job.leads:
                job.leads = False
                self._commit_waiting()  # the batch holds this job too
            else:
                job.wake.wait()
                job.wake.clear()
        if job.error is not None:
            raise job.error
        return job.new

    def _commit_waiting(self) -> None:
        with self._lock:
            batch, self._waiting = self._waiting, []
        try:
            for group in _by_destination(batch):
                _commit(group)
        except BaseException as exc:  # never leave a handler waiting
            for job in batch:
                job.error = job.error or exc
            raise
        finally:
            with self._lock:
                self.batches += 1
                self.instances += len(batch)
                following = self._waiting[0] if self._waiting else None
                if following is None:
                    self._committing = False
                else:
                    following.leads = True
            for job in batch:
                job.finished = True
                job.wake.set()
            if following is not None:
                following.wake.set()


def _by_destination(batch: list[_Job]) -> list[list[_Job]]:
    groups: dict[tuple[int, int], list[_Job]] = {}
    for job in batch:
        groups.setdefault((id(job.store), id(job.catalogue)), []).append(job)
    return list(groups.values())


def _commit(jobs: list[_Job]) -> None:
    """Publish the staged files, then catalogue those in place, in one transaction."""
    store = jobs[0].store
    staged = [job for job in jobs if job.staged is not None]
    if staged and isinstance(store, StagingStore):
        errors = store.publish([job.staged for job in staged if job.staged is not None])
        for job, error in zip(staged, errors, strict=True):
            job.error = error
    ready = [job for job in jobs if job.error is None]
    if not ready:
        return
    try:
        outcome = jobs[0].catalogue.record_instances([job.record for job in ready])
    except StorageError as exc:  # the database: locked past the bound, full, unreachable
        for job in ready:
            job.error = exc
        return
    except Exception as exc:
        if len(ready) == 1:
            ready[0].error = exc
            return
        # something in one record (a value the database refuses): each on its own, so that
        # only that instance's C-STORE fails
        log.warning("a batch of %d instances could not be catalogued; one at a time", len(ready))
        for job in ready:
            try:
                job.new = job.catalogue.record_instance(job.record)
            except Exception as one:
                job.error = one
        return
    for job, new in zip(ready, outcome, strict=True):
        job.new = new
