"""The documents of one triage run: for each active model, its result - or why it could not
analyse the study - as the next revision of that model's chain, built and stored.

Nothing is queued here: the run's outcome is recorded in one transaction afterwards
(`Catalogue.finish_triage`), which releases the new revisions into the outbox or holds them
(a downgrade waits for a person), and refuses them if the study moved on meanwhile. What a
chain already says is not built again: the same result is the same document.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from triage.catalogue import Catalogue, ChainHead, NewRevision, Outgoing, SeriesSummary
from triage.config import Settings
from triage.errors import StorageError
from triage.report import hl7
from triage.report.companions import companions, key_images_of
from triage.report.destinations import hl7_destination, sr_destination
from triage.report.header_cache import HeaderCache
from triage.report.notification import notification_objects
from triage.report.revisions import (
    DocumentRef,
    Revision,
    instance_uid,
    not_analysed_fingerprint,
    result_fingerprint,
    series_uid,
)
from triage.report.sr import NODE_DEVICE, build_not_analysed_sr, build_triage_sr
from triage.results import ModelResult, Priority
from triage.store import ObjectStore, sop_uid_of

log = logging.getLogger(__name__)

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


@dataclass(frozen=True)
class ChainOutcome:
    """What one active model (or the node, chain "") has to say about the study: its result,
    or the reason it has none."""

    chain: str
    model_version: str = ""
    result: ModelResult | None = None
    reason: str = ""
    finding: Code | None = None
    #: the series the model looked at (analysed, or tried and failed on)
    series_instance_uid: str | None = None


@dataclass(frozen=True)
class ReportPlan:
    """The run's new revisions (built and stored), and what every chain says now."""

    revisions: tuple[NewRevision, ...] = ()
    current: dict[str, str] = field(default_factory=dict)
    #: how long building and storing the documents took (the study's ``report_s`` timing)
    seconds: float = 0.0


def write_documents(
    store: ObjectStore,
    catalogue: Catalogue,
    settings: Settings,
    study_uid: str,
    outcomes: Sequence[ChainOutcome],
    *,
    software_version: str,
    headers_cache: HeaderCache | None = None,
) -> ReportPlan:
    """Build and store the next revision of every chain whose document changes
    (``headers_cache``: the headers the analysis just parsed, `triage.report.header_cache`)."""
    heads = catalogue.chain_heads(study_uid)
    series = {s.series_instance_uid: s for s in catalogue.series_of(study_uid)}
    revisions: list[NewRevision] = []
    current: dict[str, str] = {}
    for outcome in outcomes:
        looked_at = series.get(outcome.series_instance_uid or "")
        headers = _headers(store, looked_at.keys, headers_cache) if looked_at is not None else []
        keys: list[Dataset] = []
        if outcome.result is not None:
            images = [str(h.SOPInstanceUID) for h in headers]
            keys = key_images_of(outcome.result, headers)
            fingerprint = result_fingerprint(
                outcome.result, images, [str(k.SOPInstanceUID) for k in keys]
            )
        else:
            fingerprint = not_analysed_fingerprint(
                outcome.chain, outcome.model_version, outcome.reason
            )
        current[outcome.chain] = fingerprint
        head = heads.get(outcome.chain)
        if head is not None and head.says(fingerprint):
            continue  # the chain says this already: the same document, nothing new to send
        revision = _next_revision(study_uid, outcome.chain, fingerprint, head)
        header = headers[0] if headers else _any_header(store, series)
        extra: dict[str, Dataset] = {}
        if outcome.result is not None:
            document = build_triage_sr(
                headers, [outcome.result], software_version=software_version, revision=revision
            )
            extra = companions(
                store,
                study_uid,
                outcome.result,
                headers,
                keys,
                revision,
                software_version=software_version,
            )
        else:
            document = build_not_analysed_sr(
                header,
                reason=outcome.reason,
                revision=revision,
                software_version=software_version,
                model_name=outcome.chain,
                model_version=outcome.model_version,
                finding=outcome.finding,
                analysed_images=headers,
            )
        revisions.append(
            _store(store, settings, study_uid, outcome, revision, document, header, extra)
        )
    return ReportPlan(tuple(revisions), current)


def _next_revision(
    study_uid: str, chain: str, fingerprint: str, head: ChainHead | None
) -> Revision:
    predecessor = None
    if head is not None and head.released_sr_sop_instance_uid:
        predecessor = DocumentRef(
            study_uid,
            head.released_sr_series_instance_uid or series_uid(study_uid, chain),
            head.released_sr_sop_instance_uid,
            COMPREHENSIVE_3D_SR,
        )
    number = (head.latest_number if head is not None else 0) + 1
    return Revision(chain, number, fingerprint, datetime.now(), predecessor)


def _store(
    store: ObjectStore,
    settings: Settings,
    study_uid: str,
    outcome: ChainOutcome,
    revision: Revision,
    document: Dataset,
    header: Dataset,
    extra: dict[str, Dataset],
) -> NewRevision:
    """Write the revision's objects to the store; say where each goes once released. Each
    object has its own outbox row: a PACS that refuses a KOS or SEG never holds up the SR."""
    sop_uid = instance_uid(study_uid, revision)
    objects: list[Outgoing] = []
    to_pacs = sr_destination(settings)
    for kind, dataset in (("sr", document), *extra.items()):
        uid = str(dataset.SOPInstanceUID)
        key = f"results/{study_uid}/{uid}.dcm"
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        store.put(key, buffer.getvalue())
        if to_pacs is not None:
            objects.append(Outgoing(uid, key, to_pacs, kind))
    to_ris = hl7_destination(settings)
    if to_ris is not None:  # the priority where RIS worklists sort, beside the SR
        corrected = revision.predecessor is not None
        if outcome.result is not None:
            message = hl7.oru_r01(
                header, outcome.result, sending_application=settings.ae_title, corrected=corrected
            )
        else:
            message = hl7.not_analysed_oru(
                header,
                model_name=outcome.chain or NODE_DEVICE,
                model_version=outcome.model_version,
                reason=outcome.reason,
                sending_application=settings.ae_title,
                corrected=corrected,
            )
        hl7_key = f"results/{study_uid}/{sop_uid}.hl7"
        store.put(hl7_key, message.encode("utf-8"))
        objects.append(Outgoing(sop_uid, hl7_key, to_ris, "hl7"))
    # an urgent result is also told to a person: part of the revision, so sent once per result
    objects += notification_objects(
        store, settings, header, outcome.result, sop_uid, revision.content_datetime
    )
    priority = outcome.result.priority if outcome.result is not None else Priority.NOT_ANALYSED
    log.info(
        "report %s revision %d for study %s: %s",
        outcome.chain or NODE_DEVICE,
        revision.number,
        study_uid,
        priority.value,
    )
    return NewRevision(
        chain=outcome.chain,
        number=revision.number,
        fingerprint=revision.fingerprint,
        priority=priority.value,
        model_version=outcome.model_version,
        sr_sop_instance_uid=sop_uid,
        sr_series_instance_uid=series_uid(study_uid, outcome.chain),
        predecessor_sop_instance_uid=(
            revision.predecessor.sop_instance_uid if revision.predecessor else None
        ),
        objects=tuple(objects),
    )


def _headers(store: ObjectStore, keys: Sequence[str], cache: HeaderCache | None) -> list[Dataset]:
    """The headers of these instances: those the analysis just parsed, else from the store."""
    out = []
    for key in keys:
        kept = cache.get(sop_uid_of(key)) if cache is not None else None
        if kept is None:
            kept = pydicom.dcmread(io.BytesIO(store.get(key)), stop_before_pixels=True)
        out.append(kept)
    return out


def _any_header(store: ObjectStore, series: dict[str, SeriesSummary]) -> Dataset:
    """Any instance of the study: a document about the whole study copies its patient and study
    attributes from it."""
    for summary in series.values():
        for key in summary.keys:
            try:
                return pydicom.dcmread(io.BytesIO(store.get(key)), stop_before_pixels=True)
            except (StorageError, pydicom.errors.InvalidDicomError):
                continue
    raise StorageError("no instance of the study can be read from the store")
