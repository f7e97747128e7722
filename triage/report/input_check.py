"""The out-of-distribution check of a result, as the SR says it (`triage.analysis.ood`).

In each result's measurement group (TID 1501 / 1411):

- a CODE qualitative evaluation "Input compared with the training data" (99TRIAGE INPUTCHECK):
  "Uncertain" (SCT 64957009) when the input is unlike the model's reference, "Like the
  training data" (99TRIAGE LIKETRAINING) when it is not, "Not performed" (SCT 262008008)
  when the model has no reference;
- the score as a NUM "Out-of-distribution score" (99TRIAGE OODSCORE, no units), when checked;
- the threshold as an Algorithm Parameter ``ood_threshold=<value>``, beside ``threshold=``.

The two local codes are of the private scheme 99TRIAGE, declared in the SR's Coding Scheme
Identification Sequence; docs/conformance.md lists every code.
"""

from __future__ import annotations

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from triage.report.codes import (
    INPUT_CHECK,
    LIKE_TRAINING,
    LOCAL_SCHEME,
    NOT_PERFORMED,
    OOD_SCORE,
    OOD_THRESHOLD_PARAMETER_PREFIX,
    PROBABILITY_UNIT,
    UNCERTAIN,
)
from triage.results import ModelResult


def input_check_value(result: ModelResult) -> Code:
    """What the check found: uncertain, like the training data, or not performed."""
    if not result.ood_checked:
        return NOT_PERFORMED
    return UNCERTAIN if result.uncertain else LIKE_TRAINING


def input_check_evaluation(result: ModelResult) -> hd.sr.QualitativeEvaluation:
    return hd.sr.QualitativeEvaluation(name=INPUT_CHECK, value=input_check_value(result))


def ood_measurements(result: ModelResult) -> list[hd.sr.Measurement]:
    if result.ood_score is None:
        return []
    return [hd.sr.Measurement(name=OOD_SCORE, value=float(result.ood_score), unit=PROBABILITY_UNIT)]


def ood_parameters(result: ModelResult) -> list[str]:
    if result.ood_threshold is None:
        return []
    return [f"{OOD_THRESHOLD_PARAMETER_PREFIX}{float(result.ood_threshold)!r}"]


def declare_local_scheme(document: Dataset) -> None:
    """Name the private scheme the local codes are of (Coding Scheme Identification)."""
    item = Dataset()
    item.CodingSchemeDesignator = LOCAL_SCHEME
    item.CodingSchemeName = "triage local codes (docs/conformance.md)"
    item.CodingSchemeResponsibleOrganization = "triage project"
    existing = list(document.get("CodingSchemeIdentificationSequence", []))
    if all(getattr(x, "CodingSchemeDesignator", "") != LOCAL_SCHEME for x in existing):
        document.CodingSchemeIdentificationSequence = [*existing, item]
