"""Checks on the arguments every result writer shares, and deterministic timestamps."""

from __future__ import annotations

import re
from datetime import datetime

from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.valuerep import DA, DT, TM

from triage.errors import TriageError

#: Longest value of a LO (long string) attribute, e.g. SeriesDescription or Manufacturer.
LO_MAX = 64
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


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
