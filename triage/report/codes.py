"""Every code the node writes into the objects it sends to the PACS, in one place.

Each is in `pydicom.sr.codedict.codes` (same value and scheme; the tests check it). Where the
dictionary's meaning is a SNOMED CT fully specified name, e.g. "Priority (attribute)", the plain
term is written instead, as a viewer shows it to the radiologist. docs/conformance.md lists them,
and a test reads every object a node writes and checks that each code in it is listed there.
"""

from __future__ import annotations

from pydicom.sr.coding import Code

from triage.results import Priority

#: Title of the document, TID 1500 root (CID 7021) = codes.DCM.ImagingMeasurementReport.
REPORT_TITLE = Code("126000", "DCM", "Imaging Measurement Report")
#: Default "Procedure reported" (TID 1500, CID 100 extensible) = codes.LN.HeadCT.
PROCEDURE_CT_HEAD = Code("24725-4", "LN", "Head CT")
#: Concept name of the finding in each measurement group (TID 1501; written by highdicom).
FINDING = Code("121071", "DCM", "Finding")
#: The model's score, a NUM in each measurement group (TID 1501 -> TID 300).
PROBABILITY = Code("122157", "DCM", "Probability")
#: Unit of the score = codes.UCUM.NoUnits.
PROBABILITY_UNIT = Code("1", "UCUM", "no units")
#: Concept name of the triage priority, a TID 1501 CODE item = codes.SCT.Priority.
PRIORITY = Code("260870009", "SCT", "Priority")
#: Triage priority -> coded value (codes.SCT.Urgency, codes.SCT.Routine). A study that was not
#: analysed carries no priority: its SR says "Image analysis: Not performed" instead.
PRIORITY_CODES: dict[Priority, Code] = {
    Priority.URGENT: Code("103391001", "SCT", "Urgency"),
    Priority.ROUTINE: Code("373115008", "SCT", "Routine"),
}
#: A segmentation model's lesion volume, a NUM in a TID 1411 group = codes.SCT.Volume, in
#: codes.UCUM.CubicCentimeter (1 cm3 = 1 mL).
VOLUME = Code("118565006", "SCT", "Volume")
VOLUME_UNIT = Code("cm3", "UCUM", "cubic centimeter")
#: The operating threshold travels as a TID 4019 "Algorithm Parameters" (111002, DCM) TEXT item.
THRESHOLD_PARAMETER_PREFIX = "threshold="

#: Not analysed: a CODE item (codes.SCT.ImageAnalysis) valued (codes.SCT.NotPerformed) in the
#: model's measurement group, and the reason in words as a TEXT item (codes.DCM.Comment).
IMAGE_ANALYSIS = Code("24587005", "SCT", "Image analysis")
NOT_PERFORMED = Code("262008008", "SCT", "Not performed")
COMMENT = Code("121106", "DCM", "Comment")

#: The out-of-distribution check of each result (`triage.report.input_check`): a CODE item
#: valued Uncertain (codes.SCT.Uncertain), "Like the training data" or Not performed, the score
#: as a NUM, the threshold as an Algorithm Parameter. The check's concept, its "like" value
#: and the score have no standard code: they are of the private scheme LOCAL_SCHEME.
LOCAL_SCHEME = "99TRIAGE"
INPUT_CHECK = Code("INPUTCHECK", LOCAL_SCHEME, "Input compared with the training data")
LIKE_TRAINING = Code("LIKETRAINING", LOCAL_SCHEME, "Like the training data")
UNCERTAIN = Code("64957009", "SCT", "Uncertain")
OOD_SCORE = Code("OODSCORE", LOCAL_SCHEME, "Out-of-distribution score")
OOD_THRESHOLD_PARAMETER_PREFIX = "ood_threshold="
#: the local codes: not in pydicom's dictionary, listed in docs/conformance.md
LOCAL: tuple[Code, ...] = (INPUT_CHECK, LIKE_TRAINING, OOD_SCORE)

#: Every standard code above, for the tests and the conformance statement.
ALL: tuple[Code, ...] = (
    REPORT_TITLE,
    PROCEDURE_CT_HEAD,
    FINDING,
    PROBABILITY,
    PROBABILITY_UNIT,
    PRIORITY,
    *PRIORITY_CODES.values(),
    VOLUME,
    VOLUME_UNIT,
    IMAGE_ANALYSIS,
    NOT_PERFORMED,
    COMMENT,
    UNCERTAIN,
)
