"""What a result object copies from its source: absent type 2 written empty, invalid values
left empty without logging them, the caller's header unchanged."""

from __future__ import annotations

import copy
import logging

import pytest
from support.factories import lesion_ct_series

from triage.report.headers import (
    DEIDENTIFICATION_NOT_STATED,
    PATIENT_AND_STUDY_TYPE_2,
    usable_headers,
)


def test_absent_and_invalid_values_become_empty_and_are_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, headers = lesion_ct_series("source_header", seed=1, shape=(8, 8, 3))
    first = headers[0]
    first.PatientBirthDate = "1932-06-25"
    first.PatientSex = "U"
    del first.AccessionNumber
    del first.ReferringPhysicianName
    first.PatientIdentityRemoved = "YES"
    before = copy.deepcopy(first)
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        fixed = usable_headers(headers)[0]
    assert first == before  # shares elements, changes none
    for keyword in PATIENT_AND_STUDY_TYPE_2:
        assert keyword in fixed
    assert fixed.PatientBirthDate == "" and fixed.PatientSex == ""
    assert fixed.AccessionNumber == "" and fixed.ReferringPhysicianName == ""
    assert fixed.DeidentificationMethod == DEIDENTIFICATION_NOT_STATED
    assert fixed.PatientID == first.PatientID and fixed.StudyDate == "20240517"
    assert "1932-06-25" not in caplog.text and "PatientBirthDate" in caplog.text
