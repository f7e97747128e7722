"""Pull mode: find new studies on the PACS and retrieve the ones this node has not triaged.

One poll: query the PACS for studies since the stored watermark minus an overlap window (so a
study stored at the boundary is not missed), skip those already complete here, retrieve the
rest (C-MOVE to this node's receiver, C-GET, or WADO-RS), then move the watermark to the poll's
start. A study whose NumberOfStudyRelatedInstances is all here is complete at once; otherwise
the quiet period decides, as for pushed studies.

The watermark is a small JSON object in the object store (``state/pull-watermark.json``),
written only after a poll whose query succeeded. Beside the time it keeps, for each study of the
last poll, how many instances the PACS reported when it was retrieved: a study is retrieved
again only when that number grows (new images), not because the PACS also holds objects this
node does not store (its own SR, presentation states, dose reports).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from triage.catalogue import Catalogue
from triage.config import Settings
from triage.errors import ConfigError, DeliveryError, StorageError
from triage.receive.query import FoundStudy, RetrieveOutcome
from triage.store import ObjectStore

if TYPE_CHECKING:
    from triage.receive.receiver import Receiver

log = logging.getLogger(__name__)

WATERMARK_KEY = "state/pull-watermark.json"


class StudySource(Protocol):
    """Where new studies come from: the PACS over DIMSE or DICOMweb."""

    def find(self, since: datetime) -> list[FoundStudy]: ...

    def retrieve(self, study_uid: str) -> RetrieveOutcome: ...


@dataclass
class PullSummary:
    found: int = 0
    skipped: int = 0
    retrieved: list[str] = field(default_factory=list)
    complete: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


@dataclass
class Watermark:
    since: datetime | None = None
    seen: dict[str, int | None] = field(default_factory=dict)  # study -> PACS count retrieved


def read_watermark(store: ObjectStore) -> Watermark:
    try:
        if not store.exists(WATERMARK_KEY):
            return Watermark()
        data = json.loads(store.get(WATERMARK_KEY))
        return Watermark(datetime.fromisoformat(data["since"]), dict(data.get("seen", {})))
    except (StorageError, ValueError, KeyError, TypeError) as exc:
        log.warning("pull watermark unreadable (%s); starting from the look-back window", exc)
        return Watermark()


def write_watermark(store: ObjectStore, mark: Watermark) -> None:
    assert mark.since is not None
    store.put(
        WATERMARK_KEY, json.dumps({"since": mark.since.isoformat(), "seen": mark.seen}).encode()
    )


def study_datetime(study: FoundStudy) -> datetime | None:
    """StudyDate + StudyTime as a naive local datetime (DICOM's own convention)."""
    text = study.study_date.strip()
    if len(text) != 8 or not text.isdigit():
        return None
    clock = "".join(c for c in study.study_time.split(".")[0] if c.isdigit()).ljust(6, "0")[:6]
    try:
        return datetime.strptime(text + clock, "%Y%m%d%H%M%S")
    except ValueError:
        return datetime.strptime(text, "%Y%m%d")


class Puller:
    """One PACS, one catalogue: ``poll_once`` finds and retrieves what is new."""

    def __init__(
        self,
        source: StudySource,
        store: ObjectStore,
        catalogue: Catalogue,
        overlap: timedelta = timedelta(minutes=10),
        look_back: timedelta = timedelta(hours=24),
        on_complete: Callable[[str], object] | None = None,
    ) -> None:
        self.source = source
        self.store = store
        self.catalogue = catalogue
        self.overlap = overlap
        self.look_back = look_back
        self.on_complete = on_complete
        self.last_summary = PullSummary()

    def poll_once(self, now: datetime | None = None) -> PullSummary:
        started = now or datetime.now()
        mark = read_watermark(self.store)
        since = (mark.since - self.overlap) if mark.since else (started - self.look_back)
        summary = PullSummary()
        found = [s for s in self.source.find(since) if _not_before(s, since)]
        summary.found = len(found)
        seen: dict[str, int | None] = {}
        for study in found:
            uid = study.study_instance_uid
            if self._already_here(study, mark.seen):
                seen[uid] = mark.seen.get(uid, study.expected_instances)
                summary.skipped += 1
                continue
            try:
                outcome = self.source.retrieve(uid)
            except DeliveryError as exc:
                summary.failed[uid] = str(exc)
                log.warning("study %s could not be retrieved: %s", uid, exc)
                continue
            if outcome.ok:  # a partial retrieval is tried again next poll
                seen[uid] = study.expected_instances
            if not outcome.ok:
                summary.failed[uid] = (
                    f"retrieve ended with status 0x{outcome.status:04X} "
                    f"({outcome.completed} stored, {outcome.failed} failed)"
                )
                log.warning("study %s: %s", uid, summary.failed[uid])
            if outcome.completed:
                summary.retrieved.append(uid)
            if self._complete(study, outcome):
                summary.complete.append(uid)
                if self.on_complete is not None:
                    self.on_complete(uid)
        write_watermark(self.store, Watermark(started, seen))
        self.last_summary = summary
        log.info(
            "pull: %d found, %d already here, %d retrieved, %d failed",
            summary.found,
            summary.skipped,
            len(summary.retrieved),
            len(summary.failed),
        )
        return summary

    def _already_here(self, study: FoundStudy, seen: dict[str, int | None]) -> bool:
        """Retrieved before and the PACS holds nothing new since (besides this node's own SRs),
        or all its instances are here already (e.g. pushed)."""
        uid = study.study_instance_uid
        if uid in seen and self.catalogue.study_state(uid) is not None:
            before = seen[uid]
            if study.expected_instances is None or before is None:
                return True
            return study.expected_instances <= before + self.catalogue.results_delivered(uid)
        if study.expected_instances is None:
            return False
        return self.catalogue.instance_count(uid) >= study.expected_instances

    def _complete(self, study: FoundStudy, outcome: RetrieveOutcome) -> bool:
        """Every instance of the retrieved series is here (no need to wait for quiet)."""
        expected = outcome.expected if outcome.expected is not None else study.expected_instances
        if not expected:
            return False
        return self.catalogue.instance_count(study.study_instance_uid) >= expected


def _not_before(study: FoundStudy, since: datetime) -> bool:
    when = study_datetime(study)
    return when is None or when >= since


def describe(summary: PullSummary) -> Sequence[str]:
    lines = [
        f"{summary.found} stud(ies) found, {summary.skipped} already here, "
        f"{len(summary.retrieved)} retrieved, {len(summary.complete)} complete"
    ]
    lines += [f"failed {uid}: {why}" for uid, why in summary.failed.items()]
    return lines


def pull_source(settings: Settings, receiver: Receiver) -> StudySource:
    """The PACS as configured: DIMSE (C-FIND, then C-MOVE or C-GET) or DICOMweb (QIDO-RS, then
    WADO-RS). Retrieved instances go through ``receiver``, like pushed ones."""
    if settings.pacs_protocol == "dicomweb":
        from triage.receive.dicomweb import DicomwebSource

        return DicomwebSource.from_settings(settings, receiver.accept)
    from triage.receive.query import DimseSource
    from triage.receive.tls import sender_context

    if settings.pacs is None:
        raise ConfigError("pull mode needs TRIAGE_PACS (AE@host:port): the PACS to query")
    return DimseSource(
        settings.pacs,
        settings.ae_title,
        settings.pull_modalities,
        settings.pull_retrieve,
        handle_store=receiver.handle_store,
        tls=sender_context(settings),
        accepted=receiver.accepted,
    )


def puller_for(
    settings: Settings,
    store: ObjectStore,
    catalogue: Catalogue,
    receiver: Receiver,
    on_complete: Callable[[str], object] | None = None,
) -> Puller:
    return Puller(
        pull_source(settings, receiver),
        store,
        catalogue,
        overlap=timedelta(minutes=settings.pull_overlap_minutes),
        look_back=timedelta(hours=settings.pull_look_back_hours),
        on_complete=on_complete,
    )
