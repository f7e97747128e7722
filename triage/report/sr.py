"""The AI result as a DICOM Structured Report: one Comprehensive 3D SR (TID 1500 Measurement
Report) per revision of a model's result on a study.

It goes into the same study as the analysed images, in the model's own SR series, so the PACS
files it with the study. A result says what the model found (finding, probability, threshold,
priority; a segmentation model's lesion); a study the model could not analyse gets a document
that says so in coded form ("Image analysis: Not performed") with the reason in words. A changed
result is a new revision that names the one it replaces (`triage.report.revisions`). Every code
is in `triage.report.codes`; docs/conformance.md lists them. Reading back: `triage.report.sr_read`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from triage.attributes import text_value
from triage.errors import TriageError
from triage.report.codes import (
    COMMENT,
    IMAGE_ANALYSIS,
    NOT_PERFORMED,
    PRIORITY,
    PRIORITY_CODES,
    PROBABILITY,
    PROBABILITY_UNIT,
    PROCEDURE_CT_HEAD,
    REPORT_TITLE,
    THRESHOLD_PARAMETER_PREFIX,
    VOLUME,
    VOLUME_UNIT,
)
from triage.report.headers import study_header, usable_headers, volume_ends
from triage.report.input_check import (
    declare_local_scheme,
    input_check_evaluation,
    ood_measurements,
    ood_parameters,
)
from triage.report.revisions import (
    NODE_CHAIN,
    Revision,
    device_observer_uid,
    instance_uid,
    result_fingerprint,
    series_number,
    series_uid,
)
from triage.results import ModelResult, Priority

_LO_MAX = 64
#: the device observer of the node's own documents (no model could run)
NODE_DEVICE = "triage"


def build_triage_sr(
    source_images: Sequence[Dataset],
    results: Sequence[ModelResult],
    *,
    software_version: str,
    revision: Revision | None = None,
    manufacturer: str = "triage",
    institution_name: str | None = None,
    content_datetime: datetime | None = None,
    procedure_reported: Code = PROCEDURE_CT_HEAD,
) -> hd.sr.Comprehensive3DSR:
    """The SR of one model version's results on one analysed series.

    ``source_images`` are the headers of every image of the analysed series (pixel data not
    needed); ``results`` that model version's results on it, none NOT_ANALYSED. ``revision``
    places it in the model's chain (default: the first revision, made now).
    """
    headers = usable_headers(source_images)
    series = text_value(headers[0], "SeriesInstanceUID")
    model_name, model_version = _check_results(results, series)
    _check_text(manufacturer, software_version, institution_name, procedure_reported)
    if revision is None:
        fingerprint = result_fingerprint(
            results[0], [text_value(h, "SOPInstanceUID") for h in headers]
        )
        when = content_datetime or datetime.now()
        revision = Revision(model_name, 1, fingerprint, when)
    if revision.chain != model_name:
        raise TriageError(
            f'Argument "revision" is of the chain {revision.chain!r}, not of {model_name!r}.'
        )
    study_uid = text_value(headers[0], "StudyInstanceUID")
    sop_uid = instance_uid(study_uid, revision)
    frame_of_reference = text_value(headers[0], "FrameOfReferenceUID")
    groups = [
        _result_group(result, sop_uid, index, frame_of_reference)
        for index, result in enumerate(results, start=1)
    ]
    document = _document(
        headers,
        groups,
        headers,
        revision,
        _observer(model_name, model_version, manufacturer),
        f"AI triage {model_name}",
        software_version=software_version,
        manufacturer=manufacturer,
        institution_name=institution_name,
        procedure_reported=procedure_reported,
    )
    declare_local_scheme(document)
    return document


def build_not_analysed_sr(
    study_image: Dataset,
    *,
    reason: str,
    revision: Revision,
    software_version: str,
    model_name: str = "",
    model_version: str = "",
    finding: Code | None = None,
    analysed_images: Sequence[Dataset] = (),
    manufacturer: str = "triage",
    institution_name: str | None = None,
    procedure_reported: Code = PROCEDURE_CT_HEAD,
) -> hd.sr.Comprehensive3DSR:
    """The SR that says a model (or, with no ``model_name``, the node: no active model) could
    not analyse the study, and why.

    ``study_image``: any instance of the study (its patient and study attributes);
    ``analysed_images``: the series the model tried, when it got that far (its image library).
    """
    if not isinstance(reason, str) or not reason.strip():
        raise TriageError('Argument "reason" must say in words why the study was not analysed.')
    if (model_name == NODE_CHAIN) != (model_version == ""):
        raise TriageError('Arguments "model_name" and "model_version" go together.')
    if revision.chain != model_name:
        raise TriageError(
            f'Argument "revision" is of the chain {revision.chain!r}, not of {model_name!r}.'
        )
    _check_text(manufacturer, software_version, institution_name, procedure_reported)
    header = study_header(study_image)
    library = usable_headers(analysed_images, "analysed_images") if analysed_images else []
    first = text_value(header, "SOPInstanceUID")
    evidence = [header, *(i for i in library if text_value(i, "SOPInstanceUID") != first)]
    if library and text_value(library[0], "StudyInstanceUID") != text_value(
        header, "StudyInstanceUID"
    ):
        raise TriageError('Argument "analysed_images" is of another study than "study_image".')
    study_uid = text_value(header, "StudyInstanceUID")
    sop_uid = instance_uid(study_uid, revision)
    name = model_name or NODE_DEVICE
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=_derived_uid("triage-tracking", [sop_uid, 1]),
            identifier=f"{name} not analysed",
        ),
        finding_type=finding,
        algorithm_id=(
            hd.sr.AlgorithmIdentification(name=model_name, version=model_version)
            if model_name
            else None
        ),
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=IMAGE_ANALYSIS, value=NOT_PERFORMED)
        ],
    )
    group[0].ContentSequence.append(
        hd.sr.TextContentItem(
            name=COMMENT,
            value=reason.strip()[:1024],
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
    )
    return _document(
        evidence,
        [group],
        library,
        revision,
        _observer(name, model_version or software_version, manufacturer),
        f"AI triage {name}",
        software_version=software_version,
        manufacturer=manufacturer,
        institution_name=institution_name,
        procedure_reported=procedure_reported,
    )


def _document(
    evidence: Sequence[Dataset],
    groups: Sequence[Any],
    library: Sequence[Dataset],
    revision: Revision,
    observer: hd.sr.ObserverContext,
    series_description: str,
    *,
    software_version: str,
    manufacturer: str,
    institution_name: str | None,
    procedure_reported: Code,
) -> hd.sr.Comprehensive3DSR:
    study_uid = text_value(evidence[0], "StudyInstanceUID")
    try:
        report = hd.sr.MeasurementReport(
            observation_context=hd.sr.ObservationContext(observer_device_context=observer),
            procedure_reported=procedure_reported,
            imaging_measurements=list(groups),
            title=REPORT_TITLE,
            referenced_images=volume_ends(library) or None,
        )
    except (ValueError, AttributeError, TypeError) as exc:  # an image it cannot describe
        raise TriageError(
            f"the analysed images cannot go into the SR image library: {exc}"
        ) from exc
    when = revision.content_datetime
    previous = [_reference(revision.predecessor)] if revision.predecessor else None
    try:
        return hd.sr.Comprehensive3DSR(
            evidence=list(evidence),
            content=report,
            series_instance_uid=series_uid(study_uid, revision.chain),
            series_number=series_number(revision.chain),
            sop_instance_uid=instance_uid(study_uid, revision),
            instance_number=revision.number,
            manufacturer=manufacturer,
            is_complete=True,
            is_final=False,
            institution_name=institution_name,
            series_description=series_description[:_LO_MAX],
            manufacturer_model_name=manufacturer,
            software_versions=software_version,
            content_date=when.date(),
            content_time=when.time(),
            previous_versions=previous,
        )
    except ValueError:  # its text may quote a patient attribute: neither chained nor logged
        raise TriageError(
            f"the SR cannot be built for study {study_uid}: an attribute copied from its "
            "images (Patient or General Study module) is not valid DICOM"
        ) from None


def _reference(ref: Any) -> Dataset:
    """The predecessor as highdicom's previous_versions wants it: its four UIDs."""
    ds = Dataset()
    ds.StudyInstanceUID = ref.study_instance_uid
    ds.SeriesInstanceUID = ref.series_instance_uid
    ds.SOPInstanceUID = ref.sop_instance_uid
    ds.SOPClassUID = ref.sop_class_uid
    return ds


def _observer(name: str, version: str, manufacturer: str) -> hd.sr.ObserverContext:
    return hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_observer_uid(name, version),
            name=name[:_LO_MAX],
            manufacturer_name=manufacturer,
            model_name=name[:_LO_MAX],
        ),
    )


def _result_group(
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
            parameters=[
                f"{THRESHOLD_PARAMETER_PREFIX}{float(result.threshold)!r}",
                *ood_parameters(result),
            ],
        ),
        "qualitative_evaluations": [
            hd.sr.QualitativeEvaluation(name=PRIORITY, value=PRIORITY_CODES[result.priority]),
            input_check_evaluation(result),
        ],
    }
    probability = hd.sr.Measurement(
        name=PROBABILITY, value=float(result.probability), unit=PROBABILITY_UNIT
    )
    numbers = [probability, *ood_measurements(result)]
    located = (
        result.lesion_centre_lps is not None
        and result.lesion_volume_ml is not None
        and result.positive
        and frame_of_reference_uid
    )
    if not located:
        return hd.sr.MeasurementsAndQualitativeEvaluations(measurements=numbers, **common)
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
        measurements=[*numbers, volume],
        **common,
    )


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
                f"{where} is NOT_ANALYSED: a study that was not analysed gets the document of "
                "build_not_analysed_sr, with the reason."
            )
        if result.priority not in PRIORITY_CODES:
            raise TriageError(f"{where} has a priority without a code: {result.priority!r}.")
        if not isinstance(result.finding, Code):
            raise TriageError(f"{where} has a finding that is not a pydicom Code.")
        for name in ("probability", "threshold"):
            value = getattr(result, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not 0.0 <= value <= 1.0
            ):
                raise TriageError(f"{where} has {name} {value!r}; expected a number in [0, 1].")
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


def _check_text(
    manufacturer: str,
    software_version: str,
    institution_name: str | None,
    procedure_reported: Code,
) -> None:
    _require_text(manufacturer, "manufacturer", max_len=_LO_MAX)
    _require_text(software_version, "software_version", max_len=_LO_MAX)
    if institution_name is not None:
        _require_text(institution_name, "institution_name", max_len=_LO_MAX)
    if not isinstance(procedure_reported, Code):
        raise TriageError('Argument "procedure_reported" must be a pydicom Code.')


def _require_text(value: object, argument: str, *, max_len: int | None = None) -> None:
    if not isinstance(value, str) or not value.strip():
        raise TriageError(f'Argument "{argument}" must be a non-empty string, got {value!r}.')
    if max_len is not None and len(value) > max_len:
        raise TriageError(
            f'Argument "{argument}" must have at most {max_len} characters, got {len(value)}.'
        )


def _derived_uid(role: str, inputs: Sequence[object]) -> str:
    return str(generate_uid(entropy_srcs=[json.dumps([role, *inputs])]))
