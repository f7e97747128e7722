"""The Key Object Selection of a positive finding: the key slice of the series, the model as
observer, the source's study; works from anonymised and real headers; reads back."""

from __future__ import annotations

import copy
import io
from datetime import datetime
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid
from support.conformance import codes_in, documented_codes
from support.factories import lesion_ct_series
from support.real_series import GE_TILT_UNEVEN, PHILIPS_5MM, anonymised, series_headers

from triage.analysis.source_slices import key_images
from triage.errors import TriageError
from triage.report.kos import (
    KEY_OBJECT_DESCRIPTION,
    KOS_TITLE,
    build_key_object_selection,
    read_key_object_selection,
)
from triage.report.sr import device_observer_uid

ICH = Code("1386000", "SCT", "Intracranial hemorrhage")
WHEN = datetime(2024, 5, 17, 14, 30, 5)


def arguments(tag: str, **overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "finding": ICH,
        "model_name": "ich_classifier",
        "model_version": "1.0.0+abcdef12",
        "series_instance_uid": generate_uid(entropy_srcs=[tag, "kos series"]),
        "series_number": 993,
        "sop_instance_uid": generate_uid(entropy_srcs=[tag, "kos"]),
        "instance_number": 1,
        "content_datetime": WHEN,
        "software_version": "0.1.0",
    }
    out.update(overrides)
    return out


def written(document: Dataset) -> bytes:
    buffer = io.BytesIO()
    document.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def reread(document: Dataset) -> Dataset:
    return pydicom.dcmread(io.BytesIO(written(document)))


def lesion_centre(phantom: Any) -> np.ndarray:
    return (phantom.affine_lps @ np.array([*phantom.lesion.centre_voxel, 1.0]))[:3]


def test_the_kos_points_at_the_slice_through_the_lesion() -> None:
    phantom, headers = lesion_ct_series("kos_lesion", seed=7)
    keys = key_images(headers, lesion_centre(phantom), 2)
    args = arguments("kos_lesion")
    kos = reread(build_key_object_selection(keys, **args))
    read = read_key_object_selection(kos)
    assert read.study_instance_uid == headers[0].StudyInstanceUID
    assert read.series_instance_uid == args["series_instance_uid"]
    assert read.sop_instance_uid == args["sop_instance_uid"]
    assert read.instance_number == 1 and kos.SeriesNumber == 993 and kos.Modality == "KO"
    assert read.key_sop_instance_uids == tuple(k.SOPInstanceUID for k in keys)
    assert set(read.key_series_instance_uids) == {headers[0].SeriesInstanceUID}
    assert keys[0].InstanceNumber - 1 == round(phantom.lesion.centre_voxel[2])
    assert read.title == KOS_TITLE
    assert read.observer_name == "ich_classifier"
    assert read.observer_uid == device_observer_uid("ich_classifier", "1.0.0+abcdef12")
    assert read.description is not None
    for words in ("Intracranial hemorrhage", "ich_classifier", "1.0.0+abcdef12", "not reviewed"):
        assert words in read.description
    assert (kos.ContentDate, kos.ContentTime) == ("20240517", "143005")
    assert (kos.InstanceCreationDate, kos.InstanceCreationTime) == ("20240517", "143005")
    assert kos.PatientID == headers[0].PatientID and kos.PatientName == headers[0].PatientName
    # the evidence lists the key images in the source study
    (study,) = kos.CurrentRequestedProcedureEvidenceSequence
    assert study.StudyInstanceUID == headers[0].StudyInstanceUID


def test_the_same_arguments_give_the_same_object() -> None:
    _, headers = lesion_ct_series("kos_same", seed=2)
    first = written(build_key_object_selection(headers[5:6], **arguments("kos_same")))
    again = written(build_key_object_selection(headers[5:6], **arguments("kos_same")))
    assert first == again
    revised = arguments("kos_same", instance_number=2, content_datetime=datetime(2024, 5, 18))
    assert (
        read_key_object_selection(
            reread(build_key_object_selection(headers[5:6], **revised))
        ).instance_number
        == 2
    )


def test_anonymised_headers_make_a_kos_with_empty_type_2_attributes() -> None:
    _, headers = lesion_ct_series("kos_anonymised", seed=4)
    stripped = anonymised(headers)
    before = copy.deepcopy(stripped)
    kos = reread(build_key_object_selection(stripped[3:5], **arguments("kos_anonymised")))
    for keyword in ("PatientBirthDate", "PatientSex", "AccessionNumber", "ReferringPhysicianName"):
        assert keyword in kos and kos[keyword].value in ("", None), keyword
    assert stripped == before  # the caller's headers are left as they were


@pytest.mark.parametrize("name", [GE_TILT_UNEVEN, PHILIPS_5MM])
def test_real_headers_make_a_kos(name: str) -> None:
    headers = series_headers(name)
    centre = np.asarray(headers[len(headers) // 2].ImagePositionPatient, dtype=float)
    keys = key_images(headers, centre, 1)
    assert keys[0] is headers[len(headers) // 2]
    read = read_key_object_selection(reread(build_key_object_selection(keys, **arguments(name))))
    assert read.key_sop_instance_uids == (headers[len(headers) // 2].SOPInstanceUID,)
    assert read.study_instance_uid == headers[0].StudyInstanceUID


def test_every_code_is_in_the_dictionary_and_the_conformance_statement() -> None:
    assert (KOS_TITLE.value, KOS_TITLE.scheme_designator) == (
        codes.DCM.OfInterest.value,
        codes.DCM.OfInterest.scheme_designator,
    )
    assert KEY_OBJECT_DESCRIPTION.value == codes.DCM.KeyObjectDescription.value
    _, headers = lesion_ct_series("kos_codes", seed=1)
    kos = reread(build_key_object_selection(headers[:2], **arguments("kos_codes")))
    found = codes_in(kos)
    assert (KOS_TITLE.value, "DCM") in found
    missing = found - documented_codes()
    assert not missing, f"codes in the KOS but not in docs/conformance.md: {sorted(missing)}"


def test_unusable_arguments_are_named() -> None:
    _, headers = lesion_ct_series("kos_errors", seed=1)
    keys = headers[:1]
    with pytest.raises(TriageError, match='"key_images"'):
        build_key_object_selection([], **arguments("e"))
    other = copy.deepcopy(headers[1])
    other.SeriesInstanceUID = generate_uid()
    with pytest.raises(TriageError, match="one series of one study"):
        build_key_object_selection([headers[0], other], **arguments("e"))
    with pytest.raises(TriageError, match="repeats SOPInstanceUID"):
        build_key_object_selection([headers[0], headers[0]], **arguments("e"))
    bad: dict[str, object] = {
        "series_instance_uid": "not a uid",
        "sop_instance_uid": "1.2.x",
        "series_number": 0,
        "instance_number": -1,
        "content_datetime": "20240517",
        "finding": "ICH",
        "model_name": "",
        "software_version": "x" * 65,
    }
    for name, value in bad.items():
        with pytest.raises(TriageError, match=f'"{name}"'):
            build_key_object_selection(keys, **arguments("e", **{name: value}))
    no_image = copy.deepcopy(headers[0])
    del no_image.Rows
    with pytest.raises(TriageError, match="not images"):
        build_key_object_selection([no_image], **arguments("e"))
    with pytest.raises(TriageError, match="not a Key Object Selection"):
        read_key_object_selection(headers[0])
