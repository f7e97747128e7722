"""The triage SR: deterministic UIDs, valid DICOM (dciodvfy, dsrdump), and a faithful read-back."""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from support.dicom_checks import assert_dciodvfy_clean
from support.paths import SHARED_DATA

from triage.errors import TriageError
from triage.report.codes import (
    FINDING,
    PRIORITY,
    PRIORITY_CODES,
    PROBABILITY,
    PROBABILITY_UNIT,
    PROCEDURE_CT_HEAD,
    REPORT_TITLE,
)
from triage.report.revisions import (
    DocumentRef,
    Revision,
    device_observer_uid,
    instance_uid,
    result_fingerprint,
    series_number,
    series_uid,
)
from triage.report.sr import build_triage_sr
from triage.report.sr_read import SrFinding, read_document, read_triage_sr
from triage.results import ModelResult, Priority

PHILIPS_CT = SHARED_DATA / "ct_head_phantom_philips_5mm"
ICH = codes.SCT.IntracranialHemorrhage  # (1386000, SCT)
WHEN = datetime(2024, 5, 17, 14, 30, 5)


def make_ct_series(
    folder: Path, count: int = 5, *, study_uid: str | None = None, size: int = 32
) -> list[Path]:
    """Write ``count`` CT Image Storage files of one axial head series; return their paths."""
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    frame_uid = generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyDate = "20240517"
        ds.SeriesDate = "20240517"
        ds.ContentDate = "20240517"
        ds.StudyTime = "141502"
        ds.SeriesTime = "141602"
        ds.ContentTime = "141602"
        ds.AccessionNumber = "ACC0001"
        ds.Modality = "CT"
        ds.Manufacturer = "Acme Scanners"
        ds.ManufacturerModelName = "Acme CT 64"
        ds.InstitutionName = "General Hospital"
        ds.ReferringPhysicianName = "Referrer^Rita"
        ds.StudyDescription = "CT HEAD WITHOUT CONTRAST"
        ds.SeriesDescription = "HEAD 5mm"
        ds.PatientName = "Doe^Jane"
        ds.PatientID = "PAT0001"
        ds.PatientBirthDate = "19600101"
        ds.PatientSex = "F"
        ds.BodyPartExamined = "HEAD"
        ds.SliceThickness = "5"
        ds.KVP = "120"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = 2
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [-120.0, -120.0, 5.0 * index]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = 5.0 * index
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = size
        ds.Columns = size
        ds.PixelSpacing = [240.0 / size, 240.0 / size]
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "40"
        ds.WindowWidth = "80"
        ds.PixelData = np.full((size, size), 1024 + 40, dtype=np.uint16).tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"ct{index:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def read_headers(paths: list[Path]) -> list[Dataset]:
    """What the pipeline hands to build_triage_sr: headers without pixel data."""
    return [pydicom.dcmread(path, stop_before_pixels=True) for path in paths]


def result_for(headers: list[Dataset], **changes: object) -> ModelResult:
    result = ModelResult(
        model_name="ich-detector",
        model_version="1.2.0",
        finding=ICH,
        probability=0.9375,
        threshold=0.5,
        priority=Priority.URGENT,
        series_instance_uid=str(headers[0].SeriesInstanceUID),
    )
    return replace(result, **changes)  # type: ignore[arg-type]


def negative(headers: list[Dataset]) -> ModelResult:
    return result_for(headers, probability=0.0625, priority=Priority.ROUTINE)


@pytest.fixture(scope="module")
def ct_paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_ct_series(tmp_path_factory.mktemp("ct"))


@pytest.fixture
def headers(ct_paths: list[Path]) -> list[Dataset]:
    return read_headers(ct_paths)


def build(headers: list[Dataset], results: list[ModelResult]) -> Dataset:
    return build_triage_sr(
        headers,
        results,
        software_version="0.1.0",
        institution_name="General Hospital",
        content_datetime=WHEN,
    )


def save(sr: Dataset, path: Path) -> Path:
    sr.save_as(path, enforce_file_format=True)
    return path


# --- codes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("constant", "dictionary"),
    [
        (REPORT_TITLE, codes.DCM.ImagingMeasurementReport),
        (PROCEDURE_CT_HEAD, codes.LN.HeadCT),
        (FINDING, codes.DCM.Finding),
        (PROBABILITY, codes.DCM.Probability),
        (PROBABILITY_UNIT, codes.UCUM.NoUnits),
        (PRIORITY, codes.SCT.Priority),
        (PRIORITY_CODES[Priority.URGENT], codes.SCT.Urgency),
        (PRIORITY_CODES[Priority.ROUTINE], codes.SCT.Routine),
    ],
)
def test_codes_are_in_the_dictionary(constant: Code, dictionary: Code) -> None:
    assert (constant.value, constant.scheme_designator) == (
        dictionary.value,
        dictionary.scheme_designator,
    )


def test_every_analysed_priority_has_a_code() -> None:
    assert set(PRIORITY_CODES) == {p for p in Priority if p is not Priority.NOT_ANALYSED}


# --- UIDs -----------------------------------------------------------------------------------------


def revision(number: int = 1, fingerprint: str = "a" * 64, chain: str = "ich-detector") -> Revision:
    return Revision(chain, number, fingerprint, WHEN)


def test_every_revision_of_a_chain_lands_in_one_series() -> None:
    assert series_uid("1.2.3", "ich-detector") == series_uid("1.2.3", "ich-detector")
    assert series_uid("1.2.3", "ich-detector") != series_uid("1.2.3", "other-model")
    assert series_uid("1.2.3", "ich-detector") != series_uid("1.2.99", "ich-detector")
    assert series_uid("1.2.3", "ich-detector", "kos") != series_uid("1.2.3", "ich-detector")
    for kind, base in (("sr", 990), ("kos", 980), ("seg", 970)):
        assert base <= series_number("ich-detector", kind) <= base + 9


def test_instance_uids_are_deterministic_per_revision_and_result() -> None:
    first = instance_uid("1.2.3", revision(1))
    assert first == instance_uid("1.2.3", revision(1))
    assert first != instance_uid("1.2.3", revision(2))
    assert first != instance_uid("1.2.3", revision(1, "b" * 64))
    assert first != instance_uid("1.2.3", revision(1, chain="other-model"))
    assert first != instance_uid("1.2.3", revision(1), "kos")
    assert pydicom.uid.UID(first).is_valid


def test_fingerprint_is_the_result_and_the_images() -> None:
    base = ModelResult("m", "1", ICH, 0.9, 0.5, Priority.URGENT, "1.2.3.4")
    same = result_fingerprint(base, ["1.2", "1.3"])
    assert same == result_fingerprint(base, ["1.3", "1.2"])  # image order does not matter
    assert same != result_fingerprint(base, ["1.2", "1.3", "1.4"])  # a late image does
    changed = replace(base, probability=0.2, priority=Priority.ROUTINE)
    assert same != result_fingerprint(changed, ["1.2", "1.3"])
    assert same != result_fingerprint(replace(base, model_version="2"), ["1.2", "1.3"])


@pytest.mark.parametrize(("number", "fingerprint"), [(0, "a" * 64), (1, "short")])
def test_revision_refuses_bad_input(number: int, fingerprint: str) -> None:
    with pytest.raises(TriageError):
        Revision("m", number, fingerprint, WHEN)


# --- building -------------------------------------------------------------------------------------


def test_sr_goes_into_the_same_study_as_a_new_series(headers: list[Dataset]) -> None:
    sr = build(headers, [result_for(headers)])
    source = headers[0]
    study = source.StudyInstanceUID
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
    assert sr.Modality == "SR"
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.SeriesInstanceUID == series_uid(study, "ich-detector") != source.SeriesInstanceUID
    fingerprint = result_fingerprint(result_for(headers), [h.SOPInstanceUID for h in headers])
    assert sr.SOPInstanceUID == instance_uid(study, revision(1, fingerprint))
    assert sr.InstanceNumber == 1 and "PredecessorDocumentsSequence" not in sr
    assert 990 <= sr.SeriesNumber <= 999
    assert sr.SeriesDescription == "AI triage ich-detector"
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "AccessionNumber",
        "StudyID",
        "StudyDate",
        "StudyTime",
        "ReferringPhysicianName",
    ):
        assert sr[keyword].value == source[keyword].value, keyword
    assert str(sr.ContentDate) == "20240517"
    assert sr.SoftwareVersions == "0.1.0"
    assert "PixelData" not in sr
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert [s.SeriesInstanceUID for s in evidence] == [source.SeriesInstanceUID]
    assert {i.ReferencedSOPInstanceUID for i in evidence[0].ReferencedSOPSequence} == {
        h.SOPInstanceUID for h in headers
    }


def test_the_same_result_is_the_same_instance(headers: list[Dataset]) -> None:
    first = build(headers, [result_for(headers)])
    again = build(list(reversed(headers)), [result_for(headers)])
    assert (again.SeriesInstanceUID, again.SOPInstanceUID) == (
        first.SeriesInstanceUID,
        first.SOPInstanceUID,
    )
    changed = build(headers, [result_for(headers, probability=0.875)])
    newer = build(headers, [result_for(headers, model_version="1.3.0")])
    assert len({first.SOPInstanceUID, changed.SOPInstanceUID, newer.SOPInstanceUID}) == 3
    assert newer.SeriesInstanceUID == first.SeriesInstanceUID  # one series per model


def test_a_revision_names_the_document_it_replaces(headers: list[Dataset], tmp_path: Path) -> None:
    first = build(headers, [result_for(headers, probability=0.2, priority=Priority.ROUTINE)])
    study = headers[0].StudyInstanceUID
    replaced = DocumentRef(study, first.SeriesInstanceUID, first.SOPInstanceUID, first.SOPClassUID)
    later = WHEN.replace(minute=WHEN.minute + 1)
    second = build_triage_sr(
        headers,
        [result_for(headers)],
        software_version="0.1.0",
        revision=Revision("ich-detector", 2, "c" * 64, later, replaced),
    )
    assert second.SeriesInstanceUID == first.SeriesInstanceUID
    assert second.InstanceNumber == 2
    assert str(second.ContentDate) + str(second.ContentTime) > (
        str(first.ContentDate) + str(first.ContentTime)
    )
    document = read_document(second)
    assert document.predecessors == (first.SOPInstanceUID,)
    assert document.instance_number == 2
    (predecessor,) = second.PredecessorDocumentsSequence
    assert predecessor.StudyInstanceUID == study
    assert_dciodvfy_clean(save(second, tmp_path / "revision.dcm"))


def test_content_tree_has_observer_library_and_one_group_per_result(
    headers: list[Dataset],
) -> None:
    sr = build(headers, [result_for(headers), negative(headers)])
    report = hd.sr.Comprehensive3DSR.from_dataset(sr).content
    assert isinstance(report, hd.sr.MeasurementReport)
    (device,) = report.get_observer_contexts(observer_type=codes.DCM.Device)
    attributes = device.observer_identifying_attributes
    assert isinstance(attributes, hd.sr.DeviceObserverIdentifyingAttributes)
    assert attributes.uid == device_observer_uid("ich-detector", "1.2.0")
    assert attributes.name == "ich-detector"
    assert attributes.manufacturer_name == "triage"
    assert attributes.model_name == "ich-detector"
    library = hd.sr.utils.find_content_items(report[0], name=codes.DCM.ImageLibrary, recursive=True)
    images = hd.sr.utils.find_content_items(library[0], value_type="IMAGE", recursive=True)
    along = sorted(headers, key=lambda h: float(h.ImagePositionPatient[2]))  # axial slices
    ends = {along[0].SOPInstanceUID, along[-1].SOPInstanceUID}
    assert {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in images} == ends
    (evidence,) = sr.CurrentRequestedProcedureEvidenceSequence
    (series,) = evidence.ReferencedSeriesSequence
    assert {r.ReferencedSOPInstanceUID for r in series.ReferencedSOPSequence} == {
        h.SOPInstanceUID for h in headers
    }
    groups = report.get_image_measurement_groups()
    assert len(groups) == 2
    assert len({g.tracking_uid for g in groups}) == 2


# --- reading back ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["urgent", "routine", "both"])
def test_read_back_gives_exactly_what_went_in(
    headers: list[Dataset], tmp_path: Path, kind: str
) -> None:
    results = {
        "urgent": [result_for(headers)],
        "routine": [negative(headers)],
        "both": [result_for(headers), negative(headers)],
    }[kind]
    path = save(build(headers, results), tmp_path / "sr.dcm")
    findings = read_triage_sr(pydicom.dcmread(path))
    assert findings == [
        SrFinding(
            model_name=r.model_name,
            model_version=r.model_version,
            finding=r.finding,
            probability=r.probability,
            priority=r.priority,
            threshold=r.threshold,
            input_check="not performed",  # these results come from no reference
        )
        for r in results
    ]
    assert [f.finding.meaning for f in findings] == [r.finding.meaning for r in results]


def test_read_back_keeps_full_float_precision(headers: list[Dataset]) -> None:
    result = result_for(headers, probability=0.123456789012345678, threshold=1 / 3)
    (finding,) = read_triage_sr(build(headers, [result]))
    assert finding.probability == result.probability
    assert finding.threshold == result.threshold


def test_read_refuses_other_objects(headers: list[Dataset]) -> None:
    with pytest.raises(TriageError, match='"dataset"'):
        read_triage_sr(headers[0])


# --- independent validators -----------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("priority", [Priority.URGENT, Priority.ROUTINE])
def test_dciodvfy_finds_no_errors(
    headers: list[Dataset], tmp_path: Path, priority: Priority
) -> None:
    result = result_for(headers) if priority is Priority.URGENT else negative(headers)
    path = save(build(headers, [result]), tmp_path / "sr.dcm")
    assert_dciodvfy_clean(path)


@pytest.mark.integration
def test_source_ct_helper_makes_valid_images(ct_paths: list[Path]) -> None:
    assert_dciodvfy_clean(ct_paths[0])


@pytest.mark.integration
def test_dsrdump_shows_finding_and_priority(headers: list[Dataset], tmp_path: Path) -> None:
    dsrdump = shutil.which("dsrdump")
    if dsrdump is None:
        pytest.skip("dsrdump (dcmtk) is not installed")
    path = save(build(headers, [result_for(headers), negative(headers)]), tmp_path / "sr.dcm")
    completed = subprocess.run(
        [dsrdump, str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    tree = completed.stdout
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    assert "Imaging Measurement Report" in tree
    assert ICH.meaning in tree
    assert '(,,"Probability")="0.9375" (1,UCUM,"no units")' in tree
    assert '(,,"Priority")=(103391001,SCT,"Urgency")' in tree
    assert '(,,"Priority")=(373115008,SCT,"Routine")' in tree
    assert "ich-detector" in tree


@pytest.mark.integration
@pytest.mark.skipif(not PHILIPS_CT.is_dir(), reason="shared Philips CT data not present")
@pytest.mark.filterwarnings("ignore:The string .HEAD. is unlikely to represent:UserWarning")
def test_sr_over_real_philips_ct_is_valid(tmp_path: Path) -> None:
    paths = sorted(p for p in PHILIPS_CT.iterdir() if p.name != "DIRFILE")
    headers = read_headers(paths)
    sr = build(headers, [result_for(headers)])
    assert sr.StudyInstanceUID == headers[0].StudyInstanceUID
    path = save(sr, tmp_path / "philips_sr.dcm")
    assert_dciodvfy_clean(path)
    assert read_triage_sr(pydicom.dcmread(path))[0].priority is Priority.URGENT


# --- refusals -------------------------------------------------------------------------------------


def test_not_analysed_is_refused(headers: list[Dataset]) -> None:
    with pytest.raises(TriageError, match="NOT_ANALYSED"):
        build(headers, [result_for(headers, priority=Priority.NOT_ANALYSED)])


def test_source_images_must_be_one_series(headers: list[Dataset], tmp_path: Path) -> None:
    other = read_headers(make_ct_series(tmp_path, 1, study_uid=headers[0].StudyInstanceUID))
    with pytest.raises(TriageError, match='"source_images".*SeriesInstanceUID'):
        build([*headers, *other], [result_for(headers)])


def test_source_images_need_their_attributes(headers: list[Dataset]) -> None:
    del headers[2].PixelSpacing
    with pytest.raises(TriageError, match='"source_images" item 2.*PixelSpacing'):
        build(headers, [result_for(headers)])


@pytest.mark.parametrize(
    ("results", "argument"),
    [
        (lambda h: [], '"results"'),
        (lambda h: [result_for(h, series_instance_uid="1.2.3")], '"results" item 0'),
        (lambda h: [result_for(h, probability=1.5)], "probability"),
        (lambda h: [result_for(h, threshold=float("nan"))], "threshold"),
        (lambda h: [result_for(h), result_for(h, model_version="2")], "one model version"),
        (lambda h: [result_for(h, model_name="")], "model_name"),
    ],
)
def test_bad_results_are_refused(headers: list[Dataset], results: object, argument: str) -> None:
    with pytest.raises(TriageError, match=argument):
        build(headers, results(headers))  # type: ignore[operator]


def test_empty_source_images_are_refused(headers: list[Dataset]) -> None:
    with pytest.raises(TriageError, match='"source_images"'):
        build([], [result_for(headers)])


def test_software_version_is_required(headers: list[Dataset]) -> None:
    with pytest.raises(TriageError, match='"software_version"'):
        build_triage_sr(headers, [result_for(headers)], software_version="")


# --- source values that are not valid DICOM -----------------------------------------------------


def test_birth_date_that_is_not_a_dicom_date_is_left_empty(
    headers: list[Dataset], caplog: pytest.LogCaptureFixture
) -> None:
    """An old system's "1960-01-01" must not cost the study its result, nor reach the log."""
    caplog.set_level(logging.WARNING, logger="triage.report.headers")
    with pydicom.config.disable_value_validation():
        for ds in headers:
            ds.PatientBirthDate = "1960-01-01"
    sr = build(headers, [result_for(headers)])
    assert sr.PatientBirthDate == ""
    assert sr.PatientID == headers[0].PatientID
    assert headers[0].PatientBirthDate == "1960-01-01"  # the caller's header is unchanged
    messages = [r.getMessage() for r in caplog.records if r.name == "triage.report.headers"]
    assert any("PatientBirthDate" in m for m in messages), caplog.text
    assert not any("1960" in m for m in messages)


def test_an_invalid_patient_sex_is_left_empty_and_never_quoted(
    headers: list[Dataset], caplog: pytest.LogCaptureFixture
) -> None:
    """highdicom refuses a PatientSex other than M, F or O, and would quote it."""
    caplog.set_level(logging.DEBUG)
    with pydicom.config.disable_value_validation():
        headers[0].PatientSex = "SECRET-VALUE"
    sr = build(headers, [result_for(headers)])
    assert sr.PatientSex == ""
    assert headers[0].PatientSex == "SECRET-VALUE"  # the caller's header is unchanged
    assert "SECRET-VALUE" not in caplog.text and "PatientSex" in caplog.text


# --- the out-of-distribution check (issue 15) ----------------------------------------------------


@pytest.mark.parametrize(
    ("score", "said"),
    [(19.6, "uncertain"), (3.2, "like the training data"), (None, "not performed")],
)
def test_the_sr_says_whether_the_input_was_like_the_training_data(
    headers: list[Dataset], tmp_path: Path, score: float | None, said: str
) -> None:
    threshold = None if score is None else 8.13
    priority = Priority.ROUTINE if score and score > 8.13 else Priority.URGENT
    result = result_for(headers, ood_score=score, ood_threshold=threshold, priority=priority)
    sr = build(headers, [result])
    (finding,) = read_triage_sr(sr)
    assert finding.input_check == said
    assert finding.ood_score == (pytest.approx(score) if score is not None else None)
    assert finding.ood_threshold == threshold
    assert finding.priority is priority
    schemes = [item.CodingSchemeDesignator for item in sr.CodingSchemeIdentificationSequence]
    assert schemes.count("99TRIAGE") == 1
    assert_dciodvfy_clean(save(sr, tmp_path / "ood.dcm"))
