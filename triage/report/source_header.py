"""The patient and study a result object copies from its source images, made copyable, and
the checks on the arguments every result writer shares.

Every object the node writes goes into the study of the analysed images, so it copies their
Patient and General Study modules (highdicom does the copying). Real headers are often not
fit to copy as they are: anonymised and research studies leave out type 2 attributes
(PatientBirthDate, PatientSex, AccessionNumber...), old systems write dates as "1932-06-25",
and anonymisers set PatientIdentityRemoved without saying how. A result must still be
written, valid, for such a study: what is absent is written empty (as the standard allows for
type 2), what is invalid is left empty, and no value is ever logged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import datetime

from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.valuerep import DA, DT, TM

from triage.errors import TriageError

log = logging.getLogger(__name__)

#: Longest value of a LO (long string) attribute, e.g. SeriesDescription or Manufacturer.
LO_MAX = 64
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_IDENTIFYING = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")

#: Type 2 attributes of the Patient and General Study modules: present in every object written,
#: empty when the source images do not have them.
TYPE2_PATIENT_AND_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "ReferringPhysicianName",
)
_DATES_AND_TIMES = (("PatientBirthDate", DA), ("StudyDate", DA), ("StudyTime", TM))
_PATIENT_SEX = ("M", "F", "O")
#: What DeidentificationMethod says when the source images claim PatientIdentityRemoved YES
#: without saying how (the attribute is then required, and there is nothing else to copy).
METHOD_NOT_STATED = "not stated in the source images"


def copyable_patient_and_study(first: Dataset) -> Dataset:
    """A copy of the first source image's header whose patient and study can be copied.

    The caller's data set is not changed (the copy shares the unchanged elements). Absent type
    2 attributes become empty; a PatientBirthDate, StudyDate or StudyTime that is not valid
    DICOM and a PatientSex other than M, F or O become empty; PatientIdentityRemoved YES
    without a de-identification method gets `METHOD_NOT_STATED` as its method.
    """
    fixed = Dataset()
    if hasattr(first, "file_meta"):
        fixed.file_meta = first.file_meta
    for element in first:
        if element.tag.group != 0x7FE0:  # pixel data is never copied
            fixed.add(element)
    study = first.get("StudyInstanceUID", "?")
    for keyword in TYPE2_PATIENT_AND_STUDY:
        if keyword not in fixed or fixed[keyword].value is None:
            _replace(fixed, keyword, "")
    for keyword, vr in _DATES_AND_TIMES:
        if not _converts(vr, fixed.get(keyword)):
            log.warning("%s of study %s is not valid DICOM; it is left empty", keyword, study)
            _replace(fixed, keyword, "")
    if str(fixed.PatientSex or "") not in ("", *_PATIENT_SEX):
        log.warning("PatientSex of study %s is not M, F or O; it is left empty", study)
        _replace(fixed, "PatientSex", "")
    removed = str(fixed.get("PatientIdentityRemoved", "") or "").upper() == "YES"
    stated = fixed.get("DeidentificationMethod") or fixed.get("DeidentificationMethodCodeSequence")
    if removed and not stated:
        _replace(fixed, "DeidentificationMethod", METHOD_NOT_STATED)
    return fixed


def _replace(ds: Dataset, keyword: str, value: str) -> None:
    """Set ``keyword`` in a new element: the old one is shared with the caller's data set."""
    if keyword in ds:
        del ds[keyword]
    setattr(ds, keyword, value)


def _converts(vr: type[DA] | type[TM], value: object) -> bool:
    if value in (None, ""):
        return True
    try:
        vr(value)
    except ValueError:
        return False
    return True


def one_series(images: Sequence[Dataset], argument: str) -> tuple[str, str]:
    """The (StudyInstanceUID, SeriesInstanceUID) of images that must be one series of one
    study, each with its SOP class and instance UIDs; a TriageError names what is not."""
    if isinstance(images, Dataset) or not isinstance(images, Sequence) or not images:
        raise TriageError(
            f'Argument "{argument}" must be a non-empty sequence of image headers '
            "(pydicom Datasets) of the analysed series."
        )
    seen: set[str] = set()
    for position, image in enumerate(images):
        where = f'Argument "{argument}" item {position}'
        if not isinstance(image, Dataset):
            raise TriageError(f"{where} must be a pydicom Dataset, got {type(image)}.")
        empty = [k for k in _IDENTIFYING if not str(image.get(k, "") or "").strip()]
        if empty:
            raise TriageError(f"{where} lacks {', '.join(empty)}.")
        if image.SOPInstanceUID in seen:
            raise TriageError(f"{where} repeats SOPInstanceUID {image.SOPInstanceUID}.")
        seen.add(str(image.SOPInstanceUID))
    first = images[0]
    for image in images[1:]:
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
            if str(image.get(keyword)) != str(first.get(keyword)):
                raise TriageError(
                    f'Argument "{argument}" must be one series of one study; {keyword} '
                    f"differs ({first.get(keyword)} vs {image.get(keyword)})."
                )
    return str(first.StudyInstanceUID), str(first.SeriesInstanceUID)


def require_text(value: object, argument: str, max_len: int | None = LO_MAX) -> str:
    """``value`` when it is a non-empty string of at most ``max_len`` characters."""
    if not isinstance(value, str) or not value.strip():
        raise TriageError(f'Argument "{argument}" must be a non-empty string, got {value!r}.')
    if max_len is not None and len(value) > max_len:
        raise TriageError(
            f'Argument "{argument}" must have at most {max_len} characters, got {len(value)}.'
        )
    return value


def require_number(value: object, argument: str) -> int:
    """``value`` when it is a positive whole number (series and instance numbers)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TriageError(f'Argument "{argument}" must be a positive whole number, got {value!r}.')
    return value


def require_uid(value: object, argument: str) -> str:
    """``value`` when it is a valid DICOM UID (digits and dots, at most 64 characters)."""
    if not isinstance(value, str) or len(value) > 64 or not _UID.fullmatch(value):
        raise TriageError(f'Argument "{argument}" must be a valid DICOM UID, got {value!r}.')
    return value


def require_datetime(value: object, argument: str) -> datetime:
    if not isinstance(value, datetime):
        raise TriageError(f'Argument "{argument}" must be a datetime, got {type(value)}.')
    return value


def require_code(value: object, argument: str) -> Code:
    if not isinstance(value, Code):
        raise TriageError(f'Argument "{argument}" must be a pydicom Code, got {type(value)}.')
    return value


def dated(document: Dataset, when: datetime) -> None:
    """Give the times highdicom stamps with "now" (instance creation, its own contribution as
    Contributing Equipment) the content date/time: the same arguments make the same bytes, so
    a result written again is the same object."""
    document.InstanceCreationDate = DA(when.date())
    document.InstanceCreationTime = TM(when.time())
    for item in document.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = DT(when)
