"""STOW-RS: objects from the outbox into their study on the PACS's DICOMweb root.

``dicomweb:<url>`` destinations (``TRIAGE_PACS_PROTOCOL=dicomweb``): one request per study, the
client and its credentials from `triage.receive.dicomweb`. An object is stored when the
answer lists it in its ReferencedSOPSequence; one in FailedSOPSequence fails with the server's
FailureReason, and so does one the answer leaves out.
"""

from __future__ import annotations

from collections.abc import Sequence

import requests
from dicomweb_client import DICOMwebClient
from pydicom.dataset import Dataset

from triage.catalogue import DeliveryRow
from triage.config import Settings
from triage.deliver.objects import load_objects
from triage.errors import TriageError
from triage.receive.dicomweb import DESTINATION_PREFIX, http_error, make_client
from triage.store import ObjectStore

# STOW-RS FailureReason values (PS3.18 Table I.2-1, PS3.4 Annex B)
FAILURE_REASONS = {
    0x0110: "processing failure",
    0x0122: "SOP class not supported",
    0x0124: "not authorized",
    0xA700: "out of resources",
    0xA900: "data set does not match SOP class",
    0xC000: "cannot understand",
    0xC122: "transfer syntax not supported",
}


class StowDestination:
    """``dicomweb:<url>``: STOW-RS to that DICOMweb root."""

    def __init__(self, store: ObjectStore, settings: Settings, destination: str) -> None:
        self.store = store
        self.settings = settings
        self.url = destination.removeprefix(DESTINATION_PREFIX)

    def send(self, rows: list[DeliveryRow]) -> list[tuple[DeliveryRow, str | None]]:
        loaded, outcome = load_objects(self.store, rows)
        if not loaded:
            return outcome
        try:
            client = make_client(self.settings, self.url)
        except TriageError as exc:
            return outcome + [(row, str(exc)) for row, _ in loaded]
        errors = store_instances(client, [ds for _, ds in loaded])
        return outcome + [(row, error) for (row, _), error in zip(loaded, errors, strict=True)]


def _stow_answer(response: requests.Response | None) -> Dataset | None:
    """The STOW-RS response body (DICOM JSON) of a refused request, when it has one."""
    if response is None or not response.content:
        return None
    try:
        return Dataset.from_json(response.json())
    except (ValueError, TypeError, KeyError):
        return None


def _reason(code: int) -> str:
    meaning = FAILURE_REASONS.get(code)
    return f"0x{code:04X}" + (f" {meaning}" if meaning else "")


def store_instances(client: DICOMwebClient, datasets: Sequence[Dataset]) -> list[str | None]:
    """STOW-RS the data sets, one request per study (into that study); one error per data set,
    None where the server stored it."""
    errors: list[str | None] = [None] * len(datasets)
    by_study: dict[str, list[int]] = {}
    for i, ds in enumerate(datasets):
        by_study.setdefault(str(ds.StudyInstanceUID), []).append(i)
    for study_uid, indexes in by_study.items():
        answers = store_study(client, study_uid, [datasets[i] for i in indexes])
        for i, error in zip(indexes, answers, strict=True):
            errors[i] = error
    return errors


def store_study(
    client: DICOMwebClient, study_uid: str, datasets: Sequence[Dataset]
) -> list[str | None]:
    """One STOW-RS request to the study's resource; one error (or None) per data set.

    Stored means listed in the answer's ReferencedSOPSequence. A data set in FailedSOPSequence
    is an error with the server's FailureReason; one the answer leaves out (Orthanc does so
    when its storage is full) is an error too. Only an answer with no body at all is taken as
    success for every data set.
    """
    url = str(client.base_url)
    try:
        answer = client.store_instances(list(datasets), study_instance_uid=study_uid)
    except requests.RequestException as exc:
        refused = _stow_answer(getattr(exc, "response", None))
        if refused is None or "FailedSOPSequence" not in refused:
            return [str(http_error(exc, url, "store request (STOW-RS)"))] * len(datasets)
        answer = refused  # e.g. 409 Conflict: the answer says why, per instance
    except ValueError as exc:  # an answer dicomweb-client cannot read
        unreadable = f"the DICOMweb server at {url} gave an unreadable STOW-RS answer: {exc}"
        return [unreadable] * len(datasets)
    failed = {
        str(item.get("ReferencedSOPInstanceUID", "")): int(item.get("FailureReason", 0xC000))
        for item in answer.get("FailedSOPSequence", [])
    }
    stored = {
        str(item.get("ReferencedSOPInstanceUID", ""))
        for item in answer.get("ReferencedSOPSequence", [])
    }
    listed = "FailedSOPSequence" in answer or "ReferencedSOPSequence" in answer
    errors: list[str | None] = []
    for ds in datasets:
        uid = str(ds.SOPInstanceUID)
        if uid in failed:
            errors.append(
                f"the DICOMweb server at {url} did not store the SR (STOW-RS failure reason "
                f"{_reason(failed[uid])})"
            )
        elif listed and uid not in stored:
            errors.append(
                f"the DICOMweb server at {url} did not store the SR: its STOW-RS answer lists "
                "it neither as stored nor as failed (is its storage full?)"
            )
        else:
            errors.append(None)
    return errors
