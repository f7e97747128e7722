"""Query/Retrieve SCU: find studies on the PACS (C-FIND) and retrieve them (C-MOVE or C-GET).

Study Root, STUDY level. C-MOVE asks the PACS to send the study to this node's own receiver (the
PACS must know this node's AE title, host and port); C-GET brings it back over the same
association, so the PACS needs no route to the node. Instances retrieved by C-GET go through
the same handler as pushed ones (stored durably, catalogued, quarantined when unusable).
"""

from __future__ import annotations

import dataclasses
import logging
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import build_role, evt
from pynetdicom.association import Association

from triage.attributes import text_value
from triage.config import DicomNode
from triage.dimse import PENDING, SOME_FAILED, SUCCESS, NoDelayAE
from triage.errors import DeliveryError
from triage.receive.sop_classes import STORAGE_CLASSES, retrieve_contexts

log = logging.getLogger(__name__)

# Study Root Query/Retrieve Information Model (PS3.4 C.6.2)
StudyRootQueryRetrieveInformationModelFind = "1.2.840.10008.5.1.4.1.2.2.1"
StudyRootQueryRetrieveInformationModelMove = "1.2.840.10008.5.1.4.1.2.2.2"
StudyRootQueryRetrieveInformationModelGet = "1.2.840.10008.5.1.4.1.2.2.3"


@dataclass(frozen=True)
class FoundStudy:
    """A study the PACS reported, with what the poller needs to decide on it."""

    study_instance_uid: str
    study_date: str
    study_time: str
    modalities: tuple[str, ...]
    expected_instances: int | None  # NumberOfStudyRelatedInstances, when the PACS gives it


@dataclass(frozen=True)
class RetrieveOutcome:
    """The final C-MOVE/C-GET response: sub-operation counts and the status."""

    status: int
    completed: int
    failed: int
    warning: int
    expected: int | None = None  # instances of the series retrieved, as the PACS counts them

    @property
    def ok(self) -> bool:
        return self.status in (SUCCESS, SOME_FAILED) and self.failed == 0

    def __add__(self, other: RetrieveOutcome) -> RetrieveOutcome:
        expected = (
            None
            if None in (self.expected, other.expected)
            else ((self.expected or 0) + (other.expected or 0))
        )
        worst = max((self.status, other.status), key=lambda s: (s != SUCCESS, s == SOME_FAILED, s))
        return RetrieveOutcome(
            worst,
            self.completed + other.completed,
            self.failed + other.failed,
            self.warning + other.warning,
            expected,
        )


@dataclass(frozen=True)
class FoundSeries:
    series_instance_uid: str
    modality: str
    instances: int | None


def _associate(
    pacs: DicomNode,
    calling_ae: str,
    contexts: Sequence[str],
    tls: ssl.SSLContext | None,
    timeout: float,
    handlers: list[Any] | None = None,
    roles: list[Any] | None = None,
    storage: Sequence[tuple[str, Sequence[str]]] = (),
) -> Association:
    ae = NoDelayAE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for context in contexts:
        ae.add_requested_context(context)
    for sop_class, syntaxes in storage:
        ae.add_requested_context(sop_class, list(syntaxes))
    tls_args = None if tls is None else (tls, pacs.host)
    try:
        assoc = ae.associate(
            pacs.host,
            pacs.port,
            ae_title=pacs.ae_title,
            tls_args=tls_args,
            evt_handlers=handlers or [],
            ext_neg=roles or [],
        )
    except OSError as exc:
        raise DeliveryError(f"cannot connect to {pacs}: {exc}") from exc
    if not assoc.is_established:
        if assoc.is_rejected:
            raise DeliveryError(
                f"{pacs} rejected the association (calling AE {calling_ae}): check that the "
                "PACS knows this node's AE title"
            )
        raise DeliveryError(f"cannot reach {pacs}: no association (is the PACS running?)")
    return assoc


def find_studies(
    pacs: DicomNode,
    calling_ae: str,
    since: date,
    modalities: Sequence[str],
    tls: ssl.SSLContext | None = None,
    timeout: float = 30,
) -> list[FoundStudy]:
    """C-FIND studies with StudyDate on or after ``since`` and one of ``modalities``.

    The modality filter is sent as ModalitiesInStudy and applied again to the answers, since a
    PACS may ignore it.
    """
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    query.StudyDate = f"{since:%Y%m%d}-"
    query.StudyTime = ""
    query.ModalitiesInStudy = "\\".join(modalities)
    query.NumberOfStudyRelatedInstances = ""
    assoc = _associate(pacs, calling_ae, [StudyRootQueryRetrieveInformationModelFind], tls, timeout)
    found: list[FoundStudy] = []
    try:
        for status, answer in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            code = int(status.Status) if status and "Status" in status else 0xFFFF
            if code in PENDING and answer is not None:
                study = _found(answer)
                wanted = {m.upper() for m in modalities}
                if study and (not wanted or not study.modalities or wanted & set(study.modalities)):
                    found.append(study)
            elif code != SUCCESS:
                raise DeliveryError(f"{pacs} answered the study query with status 0x{code:04X}")
    finally:
        if assoc.is_established:
            assoc.release()
    return found


def _found(answer: Dataset) -> FoundStudy | None:
    uid = text_value(answer, "StudyInstanceUID")
    if not uid:
        return None
    count = text_value(answer, "NumberOfStudyRelatedInstances")
    modalities = tuple(m for m in text_value(answer, "ModalitiesInStudy").upper().split("\\") if m)
    return FoundStudy(
        study_instance_uid=uid,
        study_date=text_value(answer, "StudyDate"),
        study_time=text_value(answer, "StudyTime"),
        modalities=modalities,
        expected_instances=int(count) if count.strip().isdigit() else None,
    )


def _identifier(study_uid: str, series_uid: str | None = None) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES" if series_uid else "STUDY"
    ds.StudyInstanceUID = study_uid
    if series_uid:
        ds.SeriesInstanceUID = series_uid
    return ds


def find_series(
    pacs: DicomNode,
    calling_ae: str,
    study_uid: str,
    tls: ssl.SSLContext | None = None,
    timeout: float = 30,
) -> list[FoundSeries]:
    """C-FIND the series of one study, with their modality and instance count."""
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = study_uid
    query.SeriesInstanceUID = ""
    query.Modality = ""
    query.NumberOfSeriesRelatedInstances = ""
    assoc = _associate(pacs, calling_ae, [StudyRootQueryRetrieveInformationModelFind], tls, timeout)
    found: list[FoundSeries] = []
    try:
        for status, answer in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            code = int(status.Status) if status and "Status" in status else 0xFFFF
            if code in PENDING and answer is not None and text_value(answer, "SeriesInstanceUID"):
                count = text_value(answer, "NumberOfSeriesRelatedInstances").strip()
                found.append(
                    FoundSeries(
                        text_value(answer, "SeriesInstanceUID"),
                        text_value(answer, "Modality").upper(),
                        int(count) if count.isdigit() else None,
                    )
                )
            elif code != SUCCESS:
                raise DeliveryError(f"{pacs} answered the series query with status 0x{code:04X}")
    finally:
        if assoc.is_established:
            assoc.release()
    return found


def _outcome(responses: Any, pacs: DicomNode, what: str) -> RetrieveOutcome:
    last: Dataset | None = None
    for status, _ in responses:
        if status is None or "Status" not in status:
            raise DeliveryError(f"{pacs} did not answer the {what} (timeout or aborted)")
        last = status
        if int(status.Status) not in PENDING:
            break
    if last is None:
        raise DeliveryError(f"{pacs} did not answer the {what}")
    return RetrieveOutcome(
        status=int(last.Status),
        completed=int(last.get("NumberOfCompletedSuboperations", 0) or 0),
        failed=int(last.get("NumberOfFailedSuboperations", 0) or 0),
        warning=int(last.get("NumberOfWarningSuboperations", 0) or 0),
    )


def move_study(
    pacs: DicomNode,
    calling_ae: str,
    destination_ae: str,
    study_uid: str,
    tls: ssl.SSLContext | None = None,
    timeout: float = 600,
    series_uid: str | None = None,
) -> RetrieveOutcome:
    """C-MOVE the study (or one of its series) to ``destination_ae`` (this node's receiver, as
    the PACS knows it)."""
    assoc = _associate(pacs, calling_ae, [StudyRootQueryRetrieveInformationModelMove], tls, timeout)
    try:
        responses = assoc.send_c_move(
            _identifier(study_uid, series_uid),
            destination_ae,
            StudyRootQueryRetrieveInformationModelMove,
        )
        return _outcome(responses, pacs, "C-MOVE")
    finally:
        if assoc.is_established:
            assoc.release()


def get_study(
    pacs: DicomNode,
    calling_ae: str,
    study_uid: str,
    handle_store: Callable[[evt.Event], int],
    storage: Sequence[tuple[str, Sequence[str]]],
    tls: ssl.SSLContext | None = None,
    timeout: float = 600,
    series_uid: str | None = None,
) -> RetrieveOutcome:
    """C-GET the study (or one of its series); each instance comes back on this association
    to ``handle_store``.

    ``storage`` lists the storage SOP classes (with transfer syntaxes) this node accepts; at
    most 127 of them fit next to the C-GET context in one association (``retrieve_contexts``
    chooses them). An instance of a class not proposed is a failed sub-operation.
    """
    roles = [build_role(sop_class, scp_role=True) for sop_class, _ in storage]
    assoc = _associate(
        pacs,
        calling_ae,
        [StudyRootQueryRetrieveInformationModelGet],
        tls,
        timeout,
        handlers=[(evt.EVT_C_STORE, handle_store)],
        roles=roles,
        storage=storage,
    )
    try:
        responses = assoc.send_c_get(
            _identifier(study_uid, series_uid), StudyRootQueryRetrieveInformationModelGet
        )
        return _outcome(responses, pacs, "C-GET")
    finally:
        if assoc.is_established:
            assoc.release()


@dataclass
class DimseSource:
    """The PACS over DIMSE, as the poller's source: C-FIND, then C-MOVE or C-GET."""

    pacs: DicomNode
    calling_ae: str
    modalities: tuple[str, ...]
    method: str  # "c-move" (to calling_ae, this node's receiver) or "c-get"
    handle_store: Callable[[evt.Event], int] | None = None  # needed for C-GET
    tls: ssl.SSLContext | None = None
    accepted: tuple[str, ...] = STORAGE_CLASSES  # what C-GET takes back: the receiver's

    def find(self, since: datetime) -> list[FoundStudy]:
        return find_studies(self.pacs, self.calling_ae, since.date(), self.modalities, self.tls)

    def retrieve(self, study_uid: str) -> RetrieveOutcome:
        """Retrieve the study's series of the wanted modalities only: not the SRs (this node's
        own among them), presentation states or dose reports the PACS keeps beside them."""
        wanted = {m.upper() for m in self.modalities}
        series = [
            s
            for s in find_series(self.pacs, self.calling_ae, study_uid, self.tls)
            if not wanted or s.modality in wanted
        ]
        total = RetrieveOutcome(SUCCESS, 0, 0, 0, 0)
        for one in series:
            outcome = self._retrieve_series(study_uid, one.series_instance_uid)
            total = total + dataclasses.replace(outcome, expected=one.instances)
        return total

    def _retrieve_series(self, study_uid: str, series_uid: str) -> RetrieveOutcome:
        if self.method == "c-get":
            if self.handle_store is None:
                raise DeliveryError("C-GET needs a store handler (the node's receiver)")
            return get_study(
                self.pacs,
                self.calling_ae,
                study_uid,
                self.handle_store,
                retrieve_contexts(self.accepted),
                self.tls,
                series_uid=series_uid,
            )
        return move_study(
            self.pacs, self.calling_ae, self.calling_ae, study_uid, self.tls, series_uid=series_uid
        )
