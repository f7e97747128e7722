"""Reading a triage SR back: what it says (findings, or why it was not analysed) and where it
stands among its revisions. Symmetric with `triage.report.sr`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import highdicom as hd
import numpy as np
from highdicom.sr.utils import find_content_items
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from triage.attributes import text_value
from triage.errors import TriageError
from triage.report.codes import (
    COMMENT,
    IMAGE_ANALYSIS,
    INPUT_CHECK,
    NOT_PERFORMED,
    OOD_SCORE,
    OOD_THRESHOLD_PARAMETER_PREFIX,
    PRIORITY,
    PRIORITY_CODES,
    PROBABILITY,
    THRESHOLD_PARAMETER_PREFIX,
    VOLUME,
)
from triage.results import Priority


@dataclass(frozen=True)
class SrFinding:
    """One measurement group of a triage SR, as read back. A group that says the study was not
    analysed has priority NOT_ANALYSED, no probability and the reason."""

    model_name: str
    model_version: str
    finding: Code | None
    probability: float | None
    priority: Priority
    threshold: float | None
    #: a segmentation model's lesion: volume in mL and centre (LPS mm), when the SR has them
    lesion_volume_ml: float | None = None
    lesion_centre_lps: tuple[float, float, float] | None = None
    reason: str | None = None
    #: the out-of-distribution check: "uncertain", "like the training data" or "not
    #: performed" (None: an SR from before the check), its score and threshold
    input_check: str | None = None
    ood_score: float | None = None
    ood_threshold: float | None = None


@dataclass(frozen=True)
class SrDocument:
    """A triage SR: its place among the revisions of its chain and what it says."""

    sop_instance_uid: str
    series_instance_uid: str
    instance_number: int
    content_datetime: str  # ContentDate + ContentTime, as written
    predecessors: tuple[str, ...]  # SOP Instance UIDs it replaces
    findings: tuple[SrFinding, ...]

    @property
    def analysed(self) -> bool:
        return all(f.priority is not Priority.NOT_ANALYSED for f in self.findings)


def read_triage_sr(dataset: Dataset) -> list[SrFinding]:
    """The findings of a triage SR, one per measurement group."""
    return list(read_document(dataset).findings)


def read_document(dataset: Dataset) -> SrDocument:
    """The whole document: its revision and its findings."""
    if not isinstance(dataset, Dataset):
        raise TriageError(f'Argument "dataset" must be a pydicom Dataset, got {type(dataset)}.')
    try:
        sr = hd.sr.Comprehensive3DSR.from_dataset(dataset)
    except (ValueError, AttributeError) as exc:
        raise TriageError(f'Argument "dataset" is not a Comprehensive 3D SR: {exc}') from exc
    report = sr.content
    if not isinstance(report, hd.sr.MeasurementReport):
        raise TriageError('Argument "dataset" does not hold a TID 1500 Measurement Report.')
    groups = [
        *report.get_image_measurement_groups(),
        *report.get_volumetric_roi_measurement_groups(),
    ]
    predecessors = tuple(
        str(instance.ReferencedSOPInstanceUID)
        for study in dataset.get("PredecessorDocumentsSequence", [])
        for series in study.get("ReferencedSeriesSequence", [])
        for instance in series.get("ReferencedSOPSequence", [])
    )
    return SrDocument(
        sop_instance_uid=text_value(dataset, "SOPInstanceUID"),
        series_instance_uid=text_value(dataset, "SeriesInstanceUID"),
        instance_number=int(dataset.get("InstanceNumber", 0) or 0),
        content_datetime=text_value(dataset, "ContentDate") + text_value(dataset, "ContentTime"),
        predecessors=predecessors,
        findings=tuple(_read_group(group) for group in groups),
    )


def _read_group(group: Any) -> SrFinding:
    """One TID 1501 or TID 1411 group (highdicom reads them as private base classes)."""
    names = _group_texts(group, codes.DCM.AlgorithmName)
    versions = _group_texts(group, codes.DCM.AlgorithmVersion)
    status = group.get_qualitative_evaluations(name=IMAGE_ANALYSIS)
    if status and status[0].value == NOT_PERFORMED:
        comments = _group_texts(group, COMMENT)
        return SrFinding(
            model_name=names[0] if names else "",
            model_version=versions[0] if versions else "",
            finding=_code(group.finding_type) if group.finding_type is not None else None,
            probability=None,
            priority=Priority.NOT_ANALYSED,
            threshold=None,
            reason=comments[0] if comments else "",
        )
    finding = group.finding_type
    if finding is None:
        raise TriageError('Argument "dataset" has a measurement group without a "Finding".')
    probabilities = group.get_measurements(name=PROBABILITY)
    if len(probabilities) != 1:
        raise TriageError(
            f'Argument "dataset" has a measurement group with {len(probabilities)} '
            '"Probability" values; expected exactly one.'
        )
    priorities = group.get_qualitative_evaluations(name=PRIORITY)
    if len(priorities) != 1:
        raise TriageError(
            f'Argument "dataset" has a measurement group with {len(priorities)} '
            '"Priority" evaluations; expected exactly one.'
        )
    priority_code = priorities[0].value
    priority = next((p for p, code in PRIORITY_CODES.items() if code == priority_code), None)
    if priority is None:
        raise TriageError(f'Argument "dataset" has an unknown priority code {priority_code}.')
    threshold = ood_threshold = None
    for parameter in _group_texts(group, codes.DCM.AlgorithmParameters):
        if parameter.startswith(THRESHOLD_PARAMETER_PREFIX):
            threshold = float(parameter.removeprefix(THRESHOLD_PARAMETER_PREFIX))
        if parameter.startswith(OOD_THRESHOLD_PARAMETER_PREFIX):
            ood_threshold = float(parameter.removeprefix(OOD_THRESHOLD_PARAMETER_PREFIX))
    checks = group.get_qualitative_evaluations(name=INPUT_CHECK)
    scores = group.get_measurements(name=OOD_SCORE)
    if len(names) != 1 or len(versions) != 1:
        raise TriageError(
            'Argument "dataset" has a measurement group without exactly one '
            '"Algorithm Name" and "Algorithm Version" (TID 4019).'
        )
    return SrFinding(
        model_name=names[0],
        model_version=versions[0],
        finding=_code(finding),
        probability=float(probabilities[0].value),
        priority=priority,
        threshold=threshold,
        **_read_lesion(group),
        input_check=checks[0].value.meaning.lower() if checks else None,
        ood_score=float(scores[0].value) if scores else None,
        ood_threshold=ood_threshold,
    )


def _code(concept: Any) -> Code:
    return Code(
        value=concept.value,
        scheme_designator=concept.scheme_designator,
        meaning=concept.meaning,
        scheme_version=concept.scheme_version,
    )


def _read_lesion(group: Any) -> dict[str, Any]:
    """Lesion volume and centre of a TID 1411 group (none for a TID 1501 group)."""
    if not isinstance(group, hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations):
        return {}
    volumes = group.get_measurements(name=VOLUME)
    roi = group.roi
    centre = None
    if isinstance(roi, hd.sr.VolumeSurface) and roi.graphic_type == hd.sr.GraphicTypeValues3D.POINT:
        point = np.asarray(roi.graphic_data).reshape(-1)
        centre = (float(point[0]), float(point[1]), float(point[2]))
    return {
        "lesion_volume_ml": float(volumes[0].value) if volumes else None,
        "lesion_centre_lps": centre,
    }


def _group_texts(group: Any, name: Code) -> list[str]:
    """Values of the TEXT items named ``name`` in the measurement group (any depth)."""
    items = find_content_items(group[0], name=name, value_type=hd.sr.ValueTypeValues.TEXT)
    return [str(item.TextValue) for item in items]
