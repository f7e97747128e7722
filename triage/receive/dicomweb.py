"""DICOMweb: QIDO-RS finds new studies, WADO-RS retrieves them (the client and the pull
source); STOW-RS, which stores the results, is `triage.deliver.stow`.

The alternative to DIMSE for both directions (``TRIAGE_PACS_PROTOCOL=dicomweb``), against the
PACS's DICOMweb root ``TRIAGE_DICOMWEB_URL``. Authentication: a bearer token
(``TRIAGE_DICOMWEB_TOKEN`` or ``_TOKEN_FILE``) or else HTTP basic auth (``TRIAGE_DICOMWEB_USER``
with ``TRIAGE_DICOMWEB_PASSWORD`` or ``_PASSWORD_FILE``); the credentials go to that URL only.
Every request has a connect and a read timeout. dicomweb-client does the HTTP and the multipart
encoding; it does not retry here, because the outbox and the poller retry with their own backoff.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pydicom
import requests
from dicomweb_client import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from triage.config import Settings
from triage.dimse import SOME_FAILED, SOP_CLASS_NOT_SUPPORTED, SUCCESS
from triage.errors import ConfigError, DeliveryError
from triage.receive.query import FoundStudy, RetrieveOutcome

log = logging.getLogger(__name__)

DESTINATION_PREFIX = "dicomweb:"
CONNECT_TIMEOUT_SECONDS = 10.0
READ_TIMEOUT_SECONDS = 120.0  # between two reads on the socket, not for a whole transfer


# DICOM JSON tags (PS3.18 F.2) of the study and series attributes read from QIDO-RS answers
STUDY_INSTANCE_UID = "0020000D"
SERIES_INSTANCE_UID = "0020000E"
STUDY_DATE = "00080020"
STUDY_TIME = "00080030"
MODALITY = "00080060"
MODALITIES_IN_STUDY = "00080061"
NUMBER_OF_STUDY_RELATED_INSTANCES = "00201208"
NUMBER_OF_SERIES_RELATED_INSTANCES = "00201209"
STUDY_FIELDS = ("StudyDate", "StudyTime", "ModalitiesInStudy", "NumberOfStudyRelatedInstances")

# as stored on the PACS (any transfer syntax), not transcoded to Explicit VR Little Endian
AS_STORED = (("application/dicom", "*"),)


def make_client(settings: Settings, url: str | None = None) -> DICOMwebClient:
    """A client for ``url`` (default: TRIAGE_DICOMWEB_URL) with timeouts on every request.

    The configured token or user/password are attached only when ``url`` is the configured
    TRIAGE_DICOMWEB_URL, so an outbox item queued for a server since replaced does not send
    the new server's credentials elsewhere.
    """
    url = (url or settings.dicomweb_url).rstrip("/")
    if not url:
        raise ConfigError(
            "TRIAGE_DICOMWEB_URL is not set: give the PACS's DICOMweb root, e.g. "
            "https://pacs.example/dicom-web"
        )
    session = requests.Session()
    if url == settings.dicomweb_url.rstrip("/"):
        token = settings.dicomweb_secret("dicomweb_token")
        if token:
            session.headers["Authorization"] = f"Bearer {token}"
        elif settings.dicomweb_user:
            password = settings.dicomweb_secret("dicomweb_password")
            session.auth = (settings.dicomweb_user, password)
    try:
        client = DICOMwebClient(
            url, session=session, timeout=(CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS)
        )
    except ValueError as exc:
        raise ConfigError(f"TRIAGE_DICOMWEB_URL={url!r} cannot be used: {exc}") from exc
    client.set_http_retry_params(retry=False)
    return client


def http_error(exc: Exception, url: str, what: str) -> DeliveryError:
    """A DeliveryError that says what went wrong with a request and what to check."""
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        code = exc.response.status_code
        if code in (401, 403):
            return DeliveryError(
                f"the DICOMweb server at {url} refused the {what} (HTTP {code}): check "
                "TRIAGE_DICOMWEB_USER and TRIAGE_DICOMWEB_PASSWORD, or TRIAGE_DICOMWEB_TOKEN"
            )
        return DeliveryError(
            f"the DICOMweb server at {url} answered the {what} with HTTP {code} "
            f"{exc.response.reason or ''}".rstrip()
        )
    if isinstance(exc, requests.Timeout):
        return DeliveryError(
            f"the DICOMweb server at {url} did not answer the {what} in time "
            f"(connect {CONNECT_TIMEOUT_SECONDS:g} s, read {READ_TIMEOUT_SECONDS:g} s)"
        )
    if isinstance(exc, requests.ConnectionError):
        cause = re.search(r"\[Errno -?\d+\][^'\")]*", str(exc))  # urllib3 nests it deeply
        return DeliveryError(
            f"cannot reach the DICOMweb server at {url} for the {what} (is it running, and is "
            f"TRIAGE_DICOMWEB_URL right?): {cause.group(0) if cause else exc}"
        )
    return DeliveryError(f"the {what} to the DICOMweb server at {url} failed: {exc}")


def _values(item: dict[str, Any], tag: str) -> list[Any]:
    element = item.get(tag) or {}
    return list(element.get("Value") or [])


def _text(item: dict[str, Any], tag: str) -> str:
    values = _values(item, tag)
    return str(values[0]) if values else ""


def _count(item: dict[str, Any], tag: str) -> int | None:
    text = _text(item, tag).strip()
    return int(text) if text.isdigit() else None


def found_study(item: dict[str, Any]) -> FoundStudy | None:
    """A QIDO-RS study answer (DICOM JSON) as the poller's FoundStudy."""
    uid = _text(item, STUDY_INSTANCE_UID)
    if not uid:
        return None
    return FoundStudy(
        study_instance_uid=uid,
        study_date=_text(item, STUDY_DATE),
        study_time=_text(item, STUDY_TIME),
        modalities=tuple(str(m).upper() for m in _values(item, MODALITIES_IN_STUDY) if m),
        expected_instances=_count(item, NUMBER_OF_STUDY_RELATED_INSTANCES),
    )


def _part10(ds: Dataset) -> bytes:
    """A retrieved instance as Part 10 bytes, in the transfer syntax it came in."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds)
    return buffer.getvalue()


@dataclass
class DicomwebSource:
    """The PACS over DICOMweb as the poller's source (triage.receive.pull.StudySource).

    ``accept`` takes one retrieved instance as Part 10 bytes and answers a C-STORE status:
    the node's receiver (``Receiver.accept``), so a retrieved instance is stored, catalogued
    or quarantined exactly as a pushed one.
    """

    client: DICOMwebClient
    accept: Callable[[bytes], int]
    modalities: tuple[str, ...] = ("CT", "MR")

    @classmethod
    def from_settings(cls, settings: Settings, accept: Callable[[bytes], int]) -> DicomwebSource:
        return cls(make_client(settings), accept, settings.pull_modalities)

    @property
    def url(self) -> str:
        return str(self.client.base_url)

    def find(self, since: datetime) -> list[FoundStudy]:
        """QIDO-RS: studies with StudyDate on or after ``since`` and one of the modalities.

        One query per modality (single-value matching, which every server supports); the
        answers are filtered again here, since a server may ignore the filter.
        """
        found: dict[str, FoundStudy] = {}
        wanted = {m.upper() for m in self.modalities}
        for modality in sorted(wanted) or [""]:
            filters = {"StudyDate": f"{since:%Y%m%d}-"}
            if modality:
                filters["ModalitiesInStudy"] = modality
            try:
                answers = self.client.search_for_studies(
                    search_filters=filters, fields=list(STUDY_FIELDS)
                )
            except (requests.RequestException, ValueError) as exc:
                raise http_error(exc, self.url, "study query (QIDO-RS)") from exc
            for item in answers:
                study = found_study(item)
                if study is None or study.study_instance_uid in found:
                    continue
                if not wanted or not study.modalities or wanted & set(study.modalities):
                    found[study.study_instance_uid] = study
        return list(found.values())

    def _series(self, study_uid: str) -> list[tuple[str, int | None]]:
        """The study's series of the wanted modalities (all when none is set), each with its
        NumberOfSeriesRelatedInstances when the server gives it."""
        try:
            answers = self.client.search_for_series(
                study_uid, fields=["Modality", "NumberOfSeriesRelatedInstances"]
            )
        except (requests.RequestException, ValueError) as exc:
            raise http_error(exc, self.url, "series query (QIDO-RS)") from exc
        wanted = {m.upper() for m in self.modalities}
        return [
            (uid, _count(item, NUMBER_OF_SERIES_RELATED_INSTANCES))
            for item in answers
            if (uid := _text(item, SERIES_INSTANCE_UID))
            and (not wanted or _text(item, MODALITY).upper() in wanted)
        ]

    def retrieve(self, study_uid: str) -> RetrieveOutcome:
        """WADO-RS every series of the wanted modalities, as stored, one instance at a time.

        A broken transfer raises DeliveryError (what arrived stays stored; the poller tries
        the study again). Instances the receiver refuses count as failed (status 0xB000); those
        of SOP classes it does not take count as warnings. ``expected`` is the number of
        instances of the series retrieved, as the server counts them.
        """
        completed = failed = skipped = 0
        series = self._series(study_uid)
        counts = [count for _, count in series]
        for series_uid, _ in series:
            what = f"retrieval (WADO-RS) of series {series_uid}"
            try:
                for ds in self.client.iter_series(study_uid, series_uid, media_types=AS_STORED):
                    status = self.accept(_part10(ds))
                    if status == SUCCESS:
                        completed += 1
                    elif status == SOP_CLASS_NOT_SUPPORTED:
                        skipped += 1
                    else:
                        failed += 1
            except (requests.RequestException, ValueError, InvalidDicomError) as exc:
                raise http_error(exc, self.url, what) from exc
        return RetrieveOutcome(
            status=SOME_FAILED if failed else SUCCESS,
            completed=completed,
            failed=failed,
            warning=skipped,
            expected=None if None in counts else sum(c or 0 for c in counts),
        )
