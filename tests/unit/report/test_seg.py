"""The SEG of a segmentation model's lesion: its frames lie on the source slices (frame of
reference, positions, derivation), its pixels where the lesion is, also on the tilted GE CT;
anonymised headers work; it reads back with highdicom."""

from __future__ import annotations

import copy
import io
from datetime import datetime
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
import torch
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid
from support.conformance import codes_in, documented_codes
from support.factories import lesion_ct_series
from support.real_series import (
    GE_TILT_UNEVEN,
    PHILIPS_5MM,
    anonymised,
    series_files,
    series_headers,
)

from triage.analysis.preprocess import InputSpec, model_input_with_affine
from triage.analysis.source_slices import mask_on_source_slices
from triage.errors import TriageError
from triage.imaging.volume import assemble_volume
from triage.report.seg import (
    ARTIFICIAL_INTELLIGENCE,
    HEMORRHAGE,
    INTRACRANIAL,
    LESION,
    MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
    build_lesion_segmentation,
    read_lesion_segmentation,
    segment_codes,
)

ICH = Code("1386000", "SCT", "Intracranial hemorrhage")
WHEN = datetime(2024, 5, 17, 14, 30, 5)
MODEL_INPUT = InputSpec(pixdim=(2.5, 2.5, 5.0), spatial_size=(96, 96, 32), window=(0.0, 100.0))


def arguments(tag: str, **overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "finding": ICH,
        "model_name": "lesion_segmenter",
        "model_version": "1.0.0+0badcafe",
        "series_instance_uid": generate_uid(entropy_srcs=[tag, "seg series"]),
        "series_number": 994,
        "sop_instance_uid": generate_uid(entropy_srcs=[tag, "seg"]),
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


def assert_on_the_source_slices(seg: Dataset, headers: list[Dataset], frames: np.ndarray) -> None:
    """Frame of reference, orientation, each frame at its source image's position, derived
    from it, and the pixels of each source image as the mask says."""
    read = read_lesion_segmentation(seg)
    by_uid = {h.SOPInstanceUID: (f, h) for f, h in enumerate(headers)}
    assert read.frame_of_reference_uid == headers[0].FrameOfReferenceUID
    assert read.study_instance_uid == headers[0].StudyInstanceUID
    assert read.source_series_instance_uids == (headers[0].SeriesInstanceUID,)
    np.testing.assert_allclose(
        read.orientation, [float(v) for v in headers[0].ImageOrientationPatient]
    )
    with_lesion = {headers[f].SOPInstanceUID for f in np.nonzero(frames.any(axis=(1, 2)))[0]}
    assert {frame.source_sop_instance_uid for frame in read.frames} == with_lesion
    assert len(read.frames) == len(with_lesion)  # empty frames are left out
    for frame in read.frames:
        _, source = by_uid[frame.source_sop_instance_uid]
        np.testing.assert_allclose(
            frame.position, [float(v) for v in source.ImagePositionPatient], atol=1e-4
        )
    highdicom_seg = hd.seg.Segmentation.from_dataset(seg)
    uids = [h.SOPInstanceUID for h in headers]
    pixels = highdicom_seg.get_pixels_by_source_instance(uids, segment_numbers=[1])
    np.testing.assert_array_equal(pixels[..., 0].astype(bool), frames)


def test_the_seg_of_a_synthetic_lesion_lies_on_its_source_slices() -> None:
    phantom, headers = lesion_ct_series("seg_lesion", seed=7)
    frames = mask_on_source_slices(phantom.lesion_mask, phantom.affine_lps, headers)
    args = arguments("seg_lesion")
    seg = reread(build_lesion_segmentation(headers, frames, **args))
    assert_on_the_source_slices(seg, headers, frames)
    read = read_lesion_segmentation(seg)
    assert (read.series_instance_uid, read.sop_instance_uid) == (
        args["series_instance_uid"],
        args["sop_instance_uid"],
    )
    assert read.instance_number == 1 and seg.SeriesNumber == 994 and seg.Modality == "SEG"
    assert read.segment_label == "Intracranial hemorrhage"
    assert read.category == MORPHOLOGICALLY_ABNORMAL_STRUCTURE
    assert read.property_type == HEMORRHAGE
    assert read.anatomic_regions == (INTRACRANIAL,)
    assert (read.algorithm_name, read.algorithm_version) == ("lesion_segmenter", "1.0.0+0badcafe")
    assert seg.SegmentationType == "BINARY" and seg.SegmentSequence[0].SegmentAlgorithmType == (
        "AUTOMATIC"
    )
    assert (seg.ContentDate, seg.ContentTime) == ("20240517", "143005")
    assert seg.PatientID == headers[0].PatientID


def test_the_source_order_does_not_matter() -> None:
    phantom, headers = lesion_ct_series("seg_order", seed=8)
    shuffled = [headers[i] for i in np.random.default_rng(0).permutation(len(headers))]
    frames = mask_on_source_slices(phantom.lesion_mask, phantom.affine_lps, shuffled)
    seg = reread(build_lesion_segmentation(shuffled, frames, **arguments("seg_order")))
    assert_on_the_source_slices(seg, shuffled, frames)


@pytest.fixture(scope="module")
def ge_lesion() -> tuple[list[Dataset], np.ndarray]:
    """A 14 mm lesion made on the model grid of the tilted, unevenly spaced GE CT."""
    files = series_files(GE_TILT_UNEVEN)
    volume = assemble_volume(lambda key: Path(key).read_bytes(), [str(f) for f in files])
    x, affine = model_input_with_affine(
        volume.array, volume.affine_lps, MODEL_INPUT, torch.device("cpu")
    )
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in x.shape[2:]], indexing="ij"), axis=-1)
    lps = ijk @ affine[:3, :3].T + affine[:3, 3]
    mask = np.linalg.norm(lps - np.array([10.0, 30.0, 75.0]), axis=-1) <= 14.0
    headers = series_headers(GE_TILT_UNEVEN)
    return headers, mask_on_source_slices(mask, affine, headers)


def test_on_the_tilted_ge_ct_the_frames_land_on_the_source_slices(ge_lesion) -> None:
    headers, frames = ge_lesion
    seg = reread(build_lesion_segmentation(headers, frames, **arguments("seg_ge")))
    assert_on_the_source_slices(seg, headers, frames)
    assert len(read_lesion_segmentation(seg).frames) >= 3
    # anonymised: no PatientBirthDate, PatientSex; empty ReferringPhysicianName, AccessionNumber
    for keyword in ("PatientBirthDate", "PatientSex", "AccessionNumber", "ReferringPhysicianName"):
        assert keyword in seg and seg[keyword].value in ("", None), keyword
    assert seg.PatientIdentityRemoved == "YES" and seg.DeidentificationMethod


def test_philips_headers_make_a_seg() -> None:
    headers = series_headers(PHILIPS_5MM)
    frames = np.zeros((len(headers), int(headers[0].Rows), int(headers[0].Columns)), dtype=bool)
    frames[10:13, 200:260, 220:300] = True
    seg = reread(build_lesion_segmentation(headers, frames, **arguments("seg_philips")))
    assert_on_the_source_slices(seg, headers, frames)


def test_anonymised_headers_are_left_as_they_were() -> None:
    phantom, headers = lesion_ct_series("seg_anonymised", seed=3)
    stripped = anonymised(headers)
    before = copy.deepcopy(stripped)
    frames = mask_on_source_slices(phantom.lesion_mask, phantom.affine_lps, stripped)
    seg = reread(build_lesion_segmentation(stripped, frames, **arguments("seg_anonymised")))
    assert seg.PatientBirthDate == "" and seg.PatientSex == "" and seg.StudyID == ""
    assert stripped == before


def test_the_same_arguments_give_the_same_object() -> None:
    phantom, headers = lesion_ct_series("seg_same", seed=2)
    frames = mask_on_source_slices(phantom.lesion_mask, phantom.affine_lps, headers)
    first = written(build_lesion_segmentation(headers, frames, **arguments("seg_same")))
    again = written(build_lesion_segmentation(headers, frames, **arguments("seg_same")))
    assert first == again


def test_every_code_is_in_the_dictionary_and_the_conformance_statement() -> None:
    for ours, theirs in (
        (MORPHOLOGICALLY_ABNORMAL_STRUCTURE, codes.SCT.MorphologicallyAbnormalStructure),
        (HEMORRHAGE, codes.SCT.Hemorrhage),
        (LESION, codes.SCT.Lesion),
        (INTRACRANIAL, codes.SCT.Intracranial),
        (ARTIFICIAL_INTELLIGENCE, codes.DCM.ArtificialIntelligence),
    ):
        assert (ours.value, ours.scheme_designator) == (theirs.value, theirs.scheme_designator)
    assert segment_codes(ICH).property_type == HEMORRHAGE
    assert segment_codes(Code("123", "99X", "something else")).property_type == LESION
    phantom, headers = lesion_ct_series("seg_codes", seed=1)
    frames = mask_on_source_slices(phantom.lesion_mask, phantom.affine_lps, headers)
    found = set()
    for finding in (ICH, Code("52988006", "SCT", "Lesion")):
        seg = build_lesion_segmentation(headers, frames, **arguments("c", finding=finding))
        found |= codes_in(reread(seg))
    assert (HEMORRHAGE.value, "SCT") in found
    missing = found - documented_codes()
    assert not missing, f"codes in the SEG but not in docs/conformance.md: {sorted(missing)}"


def test_unusable_arguments_are_named() -> None:
    phantom, headers = lesion_ct_series("seg_errors", seed=1)
    frames = mask_on_source_slices(phantom.lesion_mask, phantom.affine_lps, headers)
    with pytest.raises(TriageError, match='"mask" has shape'):
        build_lesion_segmentation(headers, frames[1:], **arguments("e"))
    with pytest.raises(TriageError, match='"mask" has no lesion pixel'):
        build_lesion_segmentation(headers, np.zeros_like(frames), **arguments("e"))
    with pytest.raises(TriageError, match='"mask" must be binary'):
        build_lesion_segmentation(headers, frames * 0.5, **arguments("e"))
    no_frame = copy.deepcopy(headers)
    for header in no_frame:
        del header.FrameOfReferenceUID
    with pytest.raises(TriageError, match="FrameOfReferenceUID"):
        build_lesion_segmentation(no_frame, frames, **arguments("e"))
    with pytest.raises(TriageError, match='"source_images"'):
        build_lesion_segmentation([], frames, **arguments("e"))
    for name, value in (("series_number", 0), ("device_serial_number", ""), ("finding", "ICH")):
        with pytest.raises(TriageError, match=f'"{name}"'):
            build_lesion_segmentation(headers, frames, **arguments("e", **{name: value}))
    with pytest.raises(TriageError, match="not a Segmentation"):
        read_lesion_segmentation(headers[0])
