"""What a PACS forwards beside a study's images, put into that study as a PACS holds them.

Real files from ../shared/data/dicom (a JPEG secondary capture, a Comprehensive SR, a Basic Text
SR, a Comprehensive 3D SR) and generated objects: a secondary capture "Exam Summary", an X-Ray
Radiation Dose SR (the CT dose report), a grayscale presentation state, a key object selection
and this node's own result SR. Each keeps its SOP class and transfer syntax; it gets the study's
patient and study attributes and a series and SOP instance UID of its own.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, XRayRadiationDoseSRStorage, generate_uid

from support.paths import SHARED_DATA
from triage.report.sr import build_triage_sr
from triage.results import ModelResult, Priority

REAL_FILES = {
    "real secondary capture (JPEG)": "pydicom_oddities/SC_rgb_jpeg_dcmtk.dcm",
    "real Comprehensive SR": "pydicom_oddities/test-SR.dcm",
    "real Basic Text SR": "pydicom_oddities/reportsi.dcm",
    "real Comprehensive 3D SR": "sr/highdicom_sr_document.dcm",
}
STUDY_ATTRIBUTES = (
    "StudyInstanceUID",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
)


def _uid(*parts: object) -> str:
    return str(generate_uid(entropy_srcs=["forwarded", *map(str, parts)]))


def into_study(ds: Dataset, first_image: Dataset, name: str) -> Dataset:
    """A copy of ``ds`` in the study of ``first_image``: its patient and study attributes, and
    series and SOP instance UIDs derived from the study and ``name``."""
    out = copy.deepcopy(ds)
    for keyword in STUDY_ATTRIBUTES:
        if keyword in first_image:
            setattr(out, keyword, getattr(first_image, keyword))
    study = str(first_image.StudyInstanceUID)
    out.SeriesInstanceUID = _uid(study, name, "series")
    out.SOPInstanceUID = _uid(study, name, "instance")
    out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    return out


def real_objects(first_image: Dataset, root: Path = SHARED_DATA) -> dict[str, Dataset]:
    """The real forwarded objects, put into the study; empty when the shared data is absent."""
    if not root.is_dir():
        return {}
    return {
        name: into_study(pydicom.dcmread(root / path), first_image, name)
        for name, path in REAL_FILES.items()
    }


def exam_summary(images: Sequence[Dataset]) -> Dataset:
    """A secondary capture "Exam Summary" (a scanner's protocol and dose screen)."""
    first = images[0]
    screen = np.zeros((64, 96, 3), dtype=np.uint8)
    screen[8:56, 8:88] = (200, 200, 200)
    sc = hd.sc.SCImage(
        pixel_array=screen,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        study_instance_uid=str(first.StudyInstanceUID),
        series_instance_uid=_uid(first.StudyInstanceUID, "exam summary", "series"),
        series_number=999,
        sop_instance_uid=_uid(first.StudyInstanceUID, "exam summary", "instance"),
        instance_number=1,
        manufacturer="Scanner",
        patient_id=str(first.PatientID),
        patient_name=str(first.PatientName),
        accession_number=str(first.get("AccessionNumber", "")),
        study_date=str(first.StudyDate),
        study_time=str(first.StudyTime),
        patient_orientation=("L", "P"),
    )
    sc.SeriesDescription = "Exam Summary"
    sc.Modality = "CT"  # as scanners label their dose screens
    return sc


def dose_report(images: Sequence[Dataset]) -> Dataset:
    """An X-Ray Radiation Dose SR (TID 10011 CT Radiation Dose), the header and the total DLP."""
    first = images[0]
    ds = Dataset()
    for keyword in STUDY_ATTRIBUTES:
        if keyword in first:
            setattr(ds, keyword, getattr(first, keyword))
    ds.SOPClassUID = XRayRadiationDoseSRStorage
    ds.SeriesInstanceUID = _uid(first.StudyInstanceUID, "dose report", "series")
    ds.SOPInstanceUID = _uid(first.StudyInstanceUID, "dose report", "instance")
    ds.Modality = "SR"
    ds.SeriesNumber = 998
    ds.SeriesDescription = "Dose Report"
    ds.InstanceNumber = 1
    ds.Manufacturer = "Scanner"
    ds.ContentDate, ds.ContentTime = str(first.StudyDate), str(first.StudyTime)
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ConceptNameCodeSequence = [_code("113701", "DCM", "X-Ray Radiation Dose Report")]
    template = Dataset()
    template.MappingResource, template.TemplateIdentifier = "DCMR", "10011"
    ds.ContentTemplateSequence = [template]
    dlp = Dataset()
    dlp.RelationshipType, dlp.ValueType = "CONTAINS", "NUM"
    dlp.ConceptNameCodeSequence = [_code("113813", "DCM", "CT Dose Length Product Total")]
    value = Dataset()
    value.NumericValue = "812.3"
    value.MeasurementUnitsCodeSequence = [_code("mGy.cm", "UCUM", "mGy.cm")]
    dlp.MeasuredValueSequence = [value]
    ds.ContentSequence = [dlp]
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
    return code


def presentation_state(images: Sequence[Dataset]) -> Dataset:
    """A grayscale softcopy presentation state (a brain window on the series)."""
    study = images[0].StudyInstanceUID
    return hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=list(images),
        series_instance_uid=_uid(study, "presentation state", "series"),
        series_number=997,
        sop_instance_uid=_uid(study, "presentation state", "instance"),
        instance_number=1,
        manufacturer="Viewer",
        manufacturer_model_name="Viewer",
        software_versions="1",
        device_serial_number="1",
        content_label="BRAIN",
        voi_lut_transformations=[
            hd.pr.SoftcopyVOILUTTransformation(window_center=40.0, window_width=80.0)
        ],
    )


def key_objects(images: Sequence[Dataset]) -> Dataset:
    """A key object selection ("Of Interest") pointing at the first image."""
    study = images[0].StudyInstanceUID
    return hd.ko.KeyObjectSelectionDocument(
        evidence=list(images),
        content=hd.ko.KeyObjectSelection(
            document_title=codes.DCM.OfInterest, referenced_objects=list(images[:1])
        ),
        series_instance_uid=_uid(study, "key objects", "series"),
        series_number=996,
        sop_instance_uid=_uid(study, "key objects", "instance"),
        instance_number=1,
        manufacturer="Viewer",
    )


def node_result_sr(images: Sequence[Dataset]) -> Dataset:
    """This node's own result SR for the series (what a PACS forwards back with the study)."""
    result = ModelResult(
        "ich-detector",
        "1.0.0",
        codes.SCT.IntracranialHemorrhage,
        0.2,
        0.5,
        Priority.ROUTINE,
        str(images[0].SeriesInstanceUID),
    )
    return build_triage_sr(list(images), [result], software_version="test")


def generated_objects(images: Sequence[Dataset]) -> dict[str, Dataset]:
    """Every generated forwarded object for the study of ``images`` (one series)."""
    return {
        "exam summary (secondary capture)": exam_summary(images),
        "dose report (RDSR)": dose_report(images),
        "presentation state": presentation_state(images),
        "key object selection": key_objects(images),
        "this node's result SR": node_result_sr(images),
    }


def part10(ds: Dataset) -> bytes:
    """The object as a DICOM file, in its own transfer syntax."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
