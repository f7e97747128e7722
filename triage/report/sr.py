"""The AI result as a DICOM Structured Report, and reading it back.

One Comprehensive 3D SR (TID 1500 Measurement Report) per model run on one series: it goes into
the same study as the analysed images, in a new series, so the PACS files it with the study and
the worklist can sort on the priority it carries. Every code used is a module constant below;
docs/ (the conformance statement) lists them.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import highdicom as hd
import numpy as np
from highdicom.sr.utils import find_content_items
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid
from pydicom.valuerep import DA, TM

from triage.errors import TriageError
from triage.results import ModelResult, Priority

log = logging.getLogger(__name__)

# --- Codes --------------------------------------------------------------------------------------
# Every code below is in pydicom.sr.codedict.codes (same value and scheme; tests check it). Where
# the dictionary's meaning is a SNOMED CT fully specified name, e.g. "Priority (attribute)", the
# plain term is written instead, as a viewer shows it to the radiologist. The conformance
# statement in docs/ lists them.
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
#: Triage priority -> coded value (codes.SCT.Urgency, codes.SCT.Routine). NOT_ANALYSED has no
#: code: no SR is written for a study that was not analysed.
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

#: SR series numbers are SERIES_NUMBER_BASE + a stable digit from the model name (990..999).
SERIES_NUMBER_BASE = 990
_LO_MAX = 64


@dataclass(frozen=True)
class SrUids:
    """The UIDs of one triage SR: stable across re-runs of the same study, model and input."""

    series_instance_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class SrFinding:
    """One measurement group of a triage SR, as read back."""

    model_name: str
    model_version: str
    finding: Code
    probability: float
    priority: Priority
    threshold: float | None
    #: a segmentation model's lesion: volume in mL and centre (LPS mm), when the SR has them
    lesion_volume_ml: float | None = None
    lesion_centre_lps: tuple[float, float, float] | None = None


def sr_uids(
    study_instance_uid: str,
    model_name: str,
    model_version: str,
    series_instance_uids: Sequence[str],
) -> SrUids:
    """UIDs for the SR of one model run, so that a re-run replaces it in the PACS.

    The same study, model, model version and set of input series (in any order) always give the
    same UIDs; a change in any of them gives new ones.
    """
    _require_text(study_instance_uid, "study_instance_uid")
    _require_text(model_name, "model_name")
    _require_text(model_version, "model_version")
    if isinstance(series_instance_uids, str) or not series_instance_uids:
        raise TriageError(
            'Argument "series_instance_uids" must be a non-empty sequence of UIDs, '
            f"got {series_instance_uids!r}."
        )
    for uid in series_instance_uids:
        _require_text(uid, "series_instance_uids")
    inputs = [study_instance_uid, model_name, model_version, sorted(set(series_instance_uids))]
    return SrUids(
        series_instance_uid=_derived_uid("triage-sr-series", inputs),
        sop_instance_uid=_derived_uid("triage-sr-instance", inputs),
    )


def device_observer_uid(model_name: str, model_version: str) -> str:
    """A stable UID naming the model version as the SR's device observer."""
    return _derived_uid("triage-device", [model_name, model_version])


def sr_series_number(model_name: str) -> int:
    """Series number of a model's SR series: the same for every run of that model."""
    return SERIES_NUMBER_BASE + zlib.crc32(model_name.encode("utf-8")) % 10


def build_triage_sr(
    source_images: Sequence[Dataset],
    results: Sequence[ModelResult],
    *,
    manufacturer: str = "triage",
    software_version: str,
    institution_name: str | None = None,
    content_datetime: datetime | None = None,
    procedure_reported: Code = PROCEDURE_CT_HEAD,
) -> hd.sr.Comprehensive3DSR:
    """The SR for one model's results on one analysed series, ready to store in its study.

    ``source_images`` are the headers of every image of the analysed series (pixel data not
    needed); ``results`` are that model version's results on that series, none NOT_ANALYSED.
    """
    series_uid = _check_source_images(source_images)
    model_name, model_version = _check_results(results, series_uid)
    _require_text(manufacturer, "manufacturer", max_len=_LO_MAX)
    _require_text(software_version, "software_version", max_len=_LO_MAX)
    if institution_name is not None:
        _require_text(institution_name, "institution_name", max_len=_LO_MAX)
    if content_datetime is not None and not isinstance(content_datetime, datetime):
        raise TriageError(
            f'Argument "content_datetime" must be a datetime, got {type(content_datetime)}.'
        )
    if not isinstance(procedure_reported, Code):
        raise TriageError('Argument "procedure_reported" must be a pydicom Code.')

    study_uid = str(source_images[0].StudyInstanceUID)
    uids = sr_uids(study_uid, model_name, model_version, [series_uid])
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_observer_uid(model_name, model_version),
            name=model_name,
            manufacturer_name=manufacturer,
            model_name=model_name,
        ),
    )
    frame_of_reference = str(source_images[0].get("FrameOfReferenceUID", "") or "")
    groups = [
        _measurement_group(result, uids.sop_instance_uid, index, frame_of_reference)
        for index, result in enumerate(results, start=1)
    ]
    try:
        report = hd.sr.MeasurementReport(
            observation_context=hd.sr.ObservationContext(observer_device_context=observer),
            procedure_reported=procedure_reported,
            imaging_measurements=groups,
            title=REPORT_TITLE,
            referenced_images=list(source_images),
        )
    except ValueError as exc:  # highdicom: an instance it cannot put in an image library
        raise TriageError(
            f'Argument "source_images" cannot go into the SR image library: {exc}'
        ) from exc

    when = content_datetime or datetime.now()
    description = f"AI triage {model_name} {model_version}"[:_LO_MAX]
    evidence = [_copyable_patient_and_study(source_images[0]), *source_images[1:]]
    try:
        return hd.sr.Comprehensive3DSR(
            evidence=evidence,
            content=report,
            series_instance_uid=uids.series_instance_uid,
            series_number=sr_series_number(model_name),
            sop_instance_uid=uids.sop_instance_uid,
            instance_number=1,
            manufacturer=manufacturer,
            is_complete=True,
            is_final=False,
            institution_name=institution_name,
            series_description=description,
            manufacturer_model_name=manufacturer,
            software_versions=software_version,
            content_date=when.date(),
            content_time=when.time(),
            series_date=when.date(),
            series_time=when.time(),
        )
    except ValueError:  # its text may quote a patient attribute: neither chained nor logged
        raise TriageError(
            f"the SR cannot be built from series {series_uid}: an attribute copied from its "
            "images (Patient or General Study module) is not valid DICOM"
        ) from None


def _copyable_patient_and_study(first: Dataset) -> Dataset:
    """The first image's header with dates and times that are not valid DICOM left empty.

    The SR copies the Patient and General Study modules from it; a birth date written
    "1932-06-25" by an old system must not cost the study its result. No value is logged.
    """
    invalid = [
        keyword
        for keyword, vr in (("PatientBirthDate", DA), ("StudyDate", DA), ("StudyTime", TM))
        if not _converts(vr, first.get(keyword))
    ]
    if not invalid:
        return first
    fixed = copy.deepcopy(first)  # the caller's data set stays as it was
    for keyword in invalid:
        study = first.get("StudyInstanceUID", "?")
        log.warning("%s of study %s is not valid DICOM; the SR leaves it empty", keyword, study)
        setattr(fixed, keyword, "")
    return fixed


def _converts(vr: type[DA] | type[TM], value: object) -> bool:
    try:
        vr(value)
    except ValueError:
        return False
    return True


def read_triage_sr(dataset: Dataset) -> list[SrFinding]:
    """The findings of a triage SR (as written by build_triage_sr), one per measurement group."""
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
    return [_read_group(group) for group in groups]


# --- internals -----------------------------------------------------------------------------------


def _measurement_group(
    result: ModelResult, sop_instance_uid: str, index: int, frame_of_reference_uid: str = ""
) -> (
    hd.sr.MeasurementsAndQualitativeEvaluations
    | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
):
    """The group for one result: tracking id, algorithm, finding, probability, priority.

    TID 1501 for a finding of the whole series. A positive finding of a segmentation model
    with its lesion becomes a TID 1411 volumetric ROI group instead: the lesion centre as a
    3D point (SCOORD3D in the series' frame of reference) and the lesion volume as a NUM.
    """
    common: dict[str, Any] = {
        "tracking_identifier": hd.sr.TrackingIdentifier(
            uid=_derived_uid("triage-tracking", [sop_instance_uid, index]),
            identifier=f"{result.model_name} finding {index}",
        ),
        "finding_type": result.finding,
        "algorithm_id": hd.sr.AlgorithmIdentification(
            name=result.model_name,
            version=result.model_version,
            parameters=[f"{THRESHOLD_PARAMETER_PREFIX}{float(result.threshold)!r}"],
        ),
        "qualitative_evaluations": [
            hd.sr.QualitativeEvaluation(name=PRIORITY, value=PRIORITY_CODES[result.priority])
        ],
    }
    probability = hd.sr.Measurement(
        name=PROBABILITY, value=float(result.probability), unit=PROBABILITY_UNIT
    )
    located = (
        result.lesion_centre_lps is not None
        and result.lesion_volume_ml is not None
        and result.positive
        and frame_of_reference_uid
    )
    if not located:
        return hd.sr.MeasurementsAndQualitativeEvaluations(measurements=[probability], **common)
    assert result.lesion_centre_lps is not None and result.lesion_volume_ml is not None
    centre = np.array([[float(v) for v in result.lesion_centre_lps]])
    volume = hd.sr.Measurement(name=VOLUME, value=float(result.lesion_volume_ml), unit=VOLUME_UNIT)
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        referenced_volume_surface=hd.sr.VolumeSurface(
            graphic_type=hd.sr.GraphicTypeValues3D.POINT,
            graphic_data=centre,
            frame_of_reference_uid=frame_of_reference_uid,
            source_series=hd.sr.SourceSeriesForSegmentation(result.series_instance_uid),
        ),
        measurements=[probability, volume],
        **common,
    )


def _read_group(group: Any) -> SrFinding:
    """One TID 1501 or TID 1411 group (highdicom reads them as private base classes)."""
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
    threshold = None
    for parameter in _group_texts(group, codes.DCM.AlgorithmParameters):
        if parameter.startswith(THRESHOLD_PARAMETER_PREFIX):
            threshold = float(parameter.removeprefix(THRESHOLD_PARAMETER_PREFIX))
    names = _group_texts(group, codes.DCM.AlgorithmName)
    versions = _group_texts(group, codes.DCM.AlgorithmVersion)
    if len(names) != 1 or len(versions) != 1:
        raise TriageError(
            'Argument "dataset" has a measurement group without exactly one '
            '"Algorithm Name" and "Algorithm Version" (TID 4019).'
        )
    return SrFinding(
        model_name=names[0],
        model_version=versions[0],
        finding=Code(
            value=finding.value,
            scheme_designator=finding.scheme_designator,
            meaning=finding.meaning,
            scheme_version=finding.scheme_version,
        ),
        probability=float(probabilities[0].value),
        priority=priority,
        threshold=threshold,
        **_read_lesion(group),
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


def _group_texts(group: hd.sr.MeasurementsAndQualitativeEvaluations, name: Code) -> list[str]:
    """Values of the TEXT items named ``name`` directly under the measurement group."""
    items = find_content_items(group[0], name=name, value_type=hd.sr.ValueTypeValues.TEXT)
    return [str(item.TextValue) for item in items]


_REQUIRED_NON_EMPTY = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "Modality",
    "Rows",
    "Columns",
)
# Type 2 in the source: must be present (may be empty); highdicom copies them into the SR.
_REQUIRED_PRESENT = (
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
# The image library describes each cross-sectional image by its geometry (TID 1604).
_CROSS_SECTIONAL = ("CT", "MR", "PT")
_REQUIRED_CROSS_SECTIONAL = (
    "PixelSpacing",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "SliceThickness",
)


def _check_source_images(source_images: Sequence[Dataset]) -> str:
    """Refuse headers that are not one series of one study; return its SeriesInstanceUID."""
    if isinstance(source_images, Dataset) or not source_images:
        raise TriageError(
            'Argument "source_images" must be a non-empty sequence of image headers '
            "(pydicom Datasets) of the analysed series."
        )
    seen: set[str] = set()
    for position, image in enumerate(source_images):
        where = f'Argument "source_images" item {position}'
        if not isinstance(image, Dataset):
            raise TriageError(f"{where} must be a pydicom Dataset, got {type(image)}.")
        required = list(_REQUIRED_NON_EMPTY)
        if image.get("Modality") in _CROSS_SECTIONAL:
            required += _REQUIRED_CROSS_SECTIONAL
        empty = [keyword for keyword in required if image.get(keyword) in (None, "")]
        absent = [keyword for keyword in _REQUIRED_PRESENT if keyword not in image]
        if empty or absent:
            raise TriageError(
                f"{where} lacks attributes the SR needs: "
                + ", ".join(empty + absent)
                + " (multi-frame enhanced images are not supported)."
            )
        if image.SOPInstanceUID in seen:
            raise TriageError(f"{where} repeats SOPInstanceUID {image.SOPInstanceUID}.")
        seen.add(image.SOPInstanceUID)
    first = source_images[0]
    for image in source_images[1:]:
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
            if image[keyword].value != first[keyword].value:
                raise TriageError(
                    f'Argument "source_images" must be one series of one study; {keyword} '
                    f"differs ({first[keyword].value} vs {image[keyword].value})."
                )
    return str(first.SeriesInstanceUID)


def _check_results(results: Sequence[ModelResult], series_uid: str) -> tuple[str, str]:
    """Refuse results that are not one analysed model run on this series; return its model."""
    if not results:
        raise TriageError('Argument "results" must hold at least one ModelResult.')
    for position, result in enumerate(results):
        where = f'Argument "results" item {position}'
        if not isinstance(result, ModelResult):
            raise TriageError(f"{where} must be a ModelResult, got {type(result)}.")
        if result.priority is Priority.NOT_ANALYSED:
            raise TriageError(
                f"{where} is NOT_ANALYSED: no SR is written for a study that was not "
                "analysed; record it as not analysed in the catalogue instead."
            )
        if result.priority not in PRIORITY_CODES:
            raise TriageError(f"{where} has a priority without a code: {result.priority!r}.")
        if not isinstance(result.finding, Code):
            raise TriageError(f"{where} has a finding that is not a pydicom Code.")
        for field in ("probability", "threshold"):
            value = getattr(result, field)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not 0.0 <= value <= 1.0
            ):
                raise TriageError(f"{where} has {field} {value!r}; expected a number in [0, 1].")
        _require_text(result.model_name, f"results[{position}].model_name")
        _require_text(result.model_version, f"results[{position}].model_version")
        if (result.model_name, result.model_version) != (
            results[0].model_name,
            results[0].model_version,
        ):
            raise TriageError(
                'Argument "results" must come from one model version; found '
                f"{results[0].model_name} {results[0].model_version} and "
                f"{result.model_name} {result.model_version}."
            )
        if result.series_instance_uid != series_uid:
            raise TriageError(
                f"{where} is for series {result.series_instance_uid}, not for the series of "
                f'"source_images" ({series_uid}).'
            )
    return results[0].model_name, results[0].model_version


def _require_text(value: object, argument: str, *, max_len: int | None = None) -> None:
    if not isinstance(value, str) or not value.strip():
        raise TriageError(f'Argument "{argument}" must be a non-empty string, got {value!r}.')
    if max_len is not None and len(value) > max_len:
        raise TriageError(
            f'Argument "{argument}" must have at most {max_len} characters, got {len(value)}.'
        )


def _derived_uid(role: str, inputs: Sequence[object]) -> str:
    """A UID hashed from ``role`` and ``inputs``; JSON keeps ("ab", "c") apart from ("a", "bc")."""
    return str(generate_uid(entropy_srcs=[json.dumps([role, *inputs])]))
