"""HL7 v2.5 ORU^R01 over MLLP: the triage priority where RIS worklists sort.

Besides the SR, an unsolicited observation result per SR goes to ``TRIAGE_HL7_ENDPOINT``
(host:port). Built and read with hl7apy. What a RIS finds where:

- MSH-9 ``ORU^R01^ORU_R01``, MSH-10 a new control id per message (a retry resends the same
  stored message, so the same id), MSH-11 ``P``, MSH-12 ``2.5``, MSH-18 ``UNICODE UTF-8``.
- PID-3 the PatientID, PID-5 the PatientName (DICOM PN components mapped to XPN).
- ORC-1 ``RE``; ORC-2/ORC-3 and OBR-2/OBR-3 (placer/filler order number) and OBR-18 (placer
  field 1, where IHE Radiology carries it) the AccessionNumber, which the RIS matches the order on.
- **Priority**: TQ1-9 (v2.5 quantity/timing, HL7 table 0485: ``S^Stat^HL70485`` for an urgent
  result, ``R^Routine^HL70485`` for a routine one), mirrored in OBR-27.6 (the v2.3/v2.4
  quantity/timing priority component, which older RIS read). OBR-5 is not used (deprecated).
- OBR-4 the model (``<model>^AI triage <model> <version>^99TRIAGE``), OBR-7 StudyDate+StudyTime,
  OBR-25 ``P`` (preliminary: not reviewed by a radiologist), or ``C`` (correction) for a result
  that replaces one sent before (a new revision of the SR); OBX-11 the same.
- OBX 1: CWE (121071, DCM, "Finding") = the finding code; OBX-8 ``A`` when at or above the
  model's threshold, else ``N``. OBX 2: NM (122157, DCM, "Probability") with unit
  (1, UCUM, "no units"). OBX 3: CWE (260870009, SCT, "Priority") = (103391001, SCT, "Urgency")
  or (373115008, SCT, "Routine"), the codes of the SR. OBX-11 ``P`` (or ``C``) for each.
- Not analysed: OBX 1 CWE (24587005, SCT, "Image analysis") = (262008008, SCT, "Not
  performed"), OBX 2 TX (121106, DCM, "Comment") the reason; TQ1-9 routine.

Sending over MLLP, and reading the acknowledgement, is `triage.deliver.mllp`.
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import UTC, datetime

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from pydicom.dataset import Dataset

from triage.attributes import text_value
from triage.report.codes import (
    COMMENT,
    IMAGE_ANALYSIS,
    INPUT_CHECK,
    NOT_PERFORMED,
    OOD_SCORE,
    PRIORITY,
    PRIORITY_CODES,
)
from triage.report.input_check import input_check_value
from triage.results import ModelResult, Priority

log = logging.getLogger(__name__)

DESTINATION_PREFIX = "hl7:"
VERSION = "2.5"

# HL7 table 0485 (extended priority codes), read by RIS worklists
HL7_PRIORITY: dict[Priority, tuple[str, str]] = {
    Priority.URGENT: ("S", "Stat"),
    Priority.ROUTINE: ("R", "Routine"),
}
FINDING = ("121071", "Finding", "DCM")
PROBABILITY = ("122157", "Probability", "DCM")
NO_UNITS = ("1", "no units", "UCUM")
LOCAL_SCHEME = "99TRIAGE"
_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))


def escape(text: object) -> str:
    """A value as HL7 ER7 text: delimiters escaped, line breaks as spaces."""
    value = re.sub(r"[\r\n]+", " ", str(text))
    for char, sequence in _ESCAPES:
        value = value.replace(char, sequence)
    return value


def unescape(text: str) -> str:
    for char, sequence in reversed(_ESCAPES):
        text = text.replace(sequence, char)
    return text


def _coded(*components: object) -> str:
    return "^".join(escape(c) for c in components)


def _person_name(ds: Dataset) -> str:
    """DICOM PN (family^given^middle^prefix^suffix) as XPN (family^given^middle^suffix^prefix)."""
    parts = (text_value(ds, "PatientName").split("=")[0].split("^") + [""] * 5)[:5]
    family, given, middle, prefix, suffix = parts
    return _coded(family, given, middle, suffix, prefix).rstrip("^")


def _timestamp(date: str, time: str) -> str:
    """StudyDate + StudyTime as an HL7 DTM, or empty when they are not valid DICOM values."""
    if not re.fullmatch(r"\d{8}", date.strip()):
        return ""
    clock = time.strip().split(".")[0]
    return date.strip() + (clock if re.fullmatch(r"\d{2,6}", clock) else "")


def destination(endpoint: str) -> str:
    return f"{DESTINATION_PREFIX}{endpoint}"


def oru_r01(
    header: Dataset,
    result: ModelResult,
    *,
    sending_application: str,
    corrected: bool = False,
    now: datetime | None = None,
    control_id: str | None = None,
) -> str:
    """The ORU^R01 for one model's result on a study, as ER7 text (segments end with CR).

    ``header``: any image of the analysed series (patient and study attributes).
    ``corrected``: the result replaces one sent before (a new revision): the result status is
    ``C`` (correction), not a second preliminary one.
    """
    if result.priority not in HL7_PRIORITY:
        raise ValueError(f"a result with priority {result.priority.value!r} has no ORU^R01")
    finding = result.finding
    priority_code = PRIORITY_CODES[result.priority]
    observations = (
        ("CWE", FINDING, _coded(finding.value, finding.meaning, finding.scheme_designator), ""),
        ("NM", PROBABILITY, f"{result.probability:.4f}", _coded(*NO_UNITS)),
        (
            "CWE",
            (PRIORITY.value, PRIORITY.meaning, PRIORITY.scheme_designator),
            _coded(priority_code.value, priority_code.meaning, priority_code.scheme_designator),
            "",
        ),
        *_input_check(result),
    )
    return _message(
        header,
        result.model_name,
        result.model_version,
        result.priority,
        observations,
        abnormal="A" if result.positive else "N",
        sending_application=sending_application,
        corrected=corrected,
        now=now,
        control_id=control_id,
    )


def _input_check(result: ModelResult) -> tuple[tuple[str, tuple[str, str, str], str, str], ...]:
    """OBX 4 (and 5): the out-of-distribution check, as in the SR (`triage.report.input_check`)."""
    value = input_check_value(result)
    check = (
        "CWE",
        (INPUT_CHECK.value, INPUT_CHECK.meaning, INPUT_CHECK.scheme_designator),
        _coded(value.value, value.meaning, value.scheme_designator),
        "",
    )
    if result.ood_score is None:
        return (check,)
    score = (OOD_SCORE.value, OOD_SCORE.meaning, OOD_SCORE.scheme_designator)
    return check, ("NM", score, f"{result.ood_score:.3f}", _coded(*NO_UNITS))


def not_analysed_oru(
    header: Dataset,
    *,
    model_name: str,
    model_version: str,
    reason: str,
    sending_application: str,
    corrected: bool = False,
    now: datetime | None = None,
    control_id: str | None = None,
) -> str:
    """The ORU^R01 saying that a model (or the node, ``model_name`` "triage") could not
    analyse the study: OBX 1 CWE "Image analysis" = "Not performed", OBX 2 TX the reason; the
    priority is routine (a study that was not analysed keeps its normal place)."""
    observations = (
        (
            "CWE",
            (IMAGE_ANALYSIS.value, IMAGE_ANALYSIS.meaning, IMAGE_ANALYSIS.scheme_designator),
            _coded(NOT_PERFORMED.value, NOT_PERFORMED.meaning, NOT_PERFORMED.scheme_designator),
            "",
        ),
        ("TX", (COMMENT.value, COMMENT.meaning, COMMENT.scheme_designator), escape(reason), ""),
    )
    return _message(
        header,
        model_name,
        model_version,
        Priority.ROUTINE,
        observations,
        abnormal="",
        sending_application=sending_application,
        corrected=corrected,
        now=now,
        control_id=control_id,
    )


def _message(
    header: Dataset,
    model_name: str,
    model_version: str,
    priority_of_study: Priority,
    observations: tuple[tuple[str, tuple[str, str, str], str, str], ...],
    *,
    abnormal: str,
    sending_application: str,
    corrected: bool,
    now: datetime | None,
    control_id: str | None,
) -> str:
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")
    accession = escape(text_value(header, "AccessionNumber"))
    priority, priority_text = HL7_PRIORITY[priority_of_study]
    status = "C" if corrected else "P"

    msg = Message("ORU_R01", version=VERSION, validation_level=VALIDATION_LEVEL.TOLERANT)
    msg.msh.msh_3 = escape(sending_application)
    msg.msh.msh_7 = stamp
    msg.msh.msh_9 = "ORU^R01^ORU_R01"
    msg.msh.msh_10 = control_id or uuid.uuid4().hex[:20].upper()
    msg.msh.msh_11 = "P"
    msg.msh.msh_12 = VERSION
    msg.msh.msh_18 = "UNICODE UTF-8"

    patient_result = msg.add_group("ORU_R01_PATIENT_RESULT")
    pid = patient_result.add_group("ORU_R01_PATIENT").pid
    pid.pid_1 = "1"
    pid.pid_3 = escape(text_value(header, "PatientID"))
    pid.pid_5 = _person_name(header)

    order = patient_result.add_group("ORU_R01_ORDER_OBSERVATION")
    order.orc.orc_1 = "RE"
    order.orc.orc_2 = accession
    order.orc.orc_3 = accession
    obr = order.obr
    obr.obr_1 = "1"
    obr.obr_2 = accession
    obr.obr_3 = accession
    obr.obr_4 = _coded(model_name, f"AI triage {model_name} {model_version}", LOCAL_SCHEME)
    observed = _timestamp(text_value(header, "StudyDate"), text_value(header, "StudyTime"))
    if observed:
        obr.obr_7 = observed
    obr.obr_18 = accession
    obr.obr_22 = stamp
    obr.obr_25 = status
    obr.obr_27 = f"^^^^^{priority}"
    timing = order.add_group("ORU_R01_TIMING_QTY")
    timing.tq1.tq1_1 = "1"
    timing.tq1.tq1_9 = f"{priority}^{priority_text}^HL70485"

    for number, (value_type, concept, value, units) in enumerate(observations, start=1):
        obx = order.add_group("ORU_R01_OBSERVATION").obx
        obx.obx_1 = str(number)
        obx.obx_2 = value_type
        obx.obx_3 = _coded(*concept)
        obx.obx_5 = value
        if units:
            obx.obx_6 = units
        if number == 1 and abnormal:
            obx.obx_8 = abnormal
        obx.obx_11 = status
        obx.obx_14 = stamp
    return str(msg.to_er7()) + "\r"
