"""A segmentation model's lesion as a DICOM Segmentation on the source slices, and reading it
back.

A viewer overlays a DICOM Segmentation (SEG) on the images it was derived from when its frames
lie on those images: the same Frame of Reference, each frame at the position and orientation
of one source slice and referencing it (Derivation Image). So the lesion found on the model's
resampled grid is first put on the source slices
(`triage.analysis.source_slices.mask_on_source_slices`), and this writer takes that mask,
frame for frame in the order of the source images. One binary segment; frames without lesion
pixels are left out (highdicom's default). Same study as the images, its own series; UIDs,
numbers and content date/time come from the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import SegmentationStorage, generate_uid

from triage.analysis.source_slices import slice_geometry
from triage.errors import TriageError
from triage.report.arguments import (
    LO_MAX,
    dated,
    require_code,
    require_datetime,
    require_number,
    require_text,
    require_uid,
)
from triage.report.headers import usable_headers

# --- Codes (each in pydicom.sr.codedict.codes; tests check it) ----------------------------------
#: CID 7150 Segmentation Property Category = codes.SCT.MorphologicallyAbnormalStructure.
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = Code("49755003", "SCT", "Morphologically Abnormal Structure")
#: CID 7151/7194 Segmentation Property Type = codes.SCT.Hemorrhage (a morphologic abnormality).
HEMORRHAGE = Code("50960005", "SCT", "Hemorrhage")
#: CID 7151/7194, for findings without their own entry below = codes.SCT.Lesion.
LESION = Code("52988006", "SCT", "Lesion")
#: CID 4 Anatomic Region = codes.SCT.Intracranial.
INTRACRANIAL = Code("1101003", "SCT", "Intracranial")
#: CID 7162 algorithm family of the segment's algorithm = codes.DCM.ArtificialIntelligence.
ARTIFICIAL_INTELLIGENCE = Code("123110", "DCM", "Artificial Intelligence")
#: The finding of the shipped models, (1386000, SCT) = codes.SCT.IntracranialHemorrhage.
INTRACRANIAL_HEMORRHAGE = ("1386000", "SCT")

#: A red the viewer may draw the lesion in (CIELab L*, a*, b* of sRGB 255, 0, 0).
LESION_COLOUR = hd.color.CIELabColor(53.24, 80.09, 67.20)
CONTENT_LABEL = "LESION"


@dataclass(frozen=True)
class SegmentCodes:
    """How a finding is coded as a segment: what kind of thing, which thing, and where."""

    category: Code
    property_type: Code
    anatomic_region: Code | None = None


#: The segment codes of each finding (value, scheme). A finding is a disorder (1386000
#: "Intracranial hemorrhage" is in no segmentation context group); a segment is a structure, so
#: the finding is said the way CID 7150/7151 say it: a morphologically abnormal structure,
#: haemorrhage, in the intracranial region. Any other finding is a "Lesion".
SEGMENT_CODES: dict[tuple[str, str], SegmentCodes] = {
    INTRACRANIAL_HEMORRHAGE: SegmentCodes(
        MORPHOLOGICALLY_ABNORMAL_STRUCTURE, HEMORRHAGE, INTRACRANIAL
    ),
}
OTHER_FINDING = SegmentCodes(MORPHOLOGICALLY_ABNORMAL_STRUCTURE, LESION)


@dataclass(frozen=True)
class SegFrame:
    """One frame of a SEG as read back: where it lies and which source image it was made on."""

    position: tuple[float, float, float]  # ImagePositionPatient of the frame
    source_sop_instance_uid: str | None


@dataclass(frozen=True)
class LesionSegmentation:
    """A triage SEG as read back: its segment, where its frames lie, what they come from."""

    study_instance_uid: str
    series_instance_uid: str  # of the SEG itself
    sop_instance_uid: str
    instance_number: int
    frame_of_reference_uid: str
    source_series_instance_uids: tuple[str, ...]
    segment_label: str
    category: Code
    property_type: Code
    anatomic_regions: tuple[Code, ...]
    algorithm_name: str | None
    algorithm_version: str | None
    orientation: tuple[float, ...]  # ImageOrientationPatient shared by the frames
    frames: tuple[SegFrame, ...]


def segment_codes(finding: Code) -> SegmentCodes:
    """The segment codes for a finding (`SEGMENT_CODES`, else a lesion)."""
    return SEGMENT_CODES.get((finding.value, finding.scheme_designator), OTHER_FINDING)


def build_lesion_segmentation(
    source_images: Sequence[Dataset],
    mask: np.ndarray,
    *,
    finding: Code,
    model_name: str,
    model_version: str,
    series_instance_uid: str,
    series_number: int,
    sop_instance_uid: str,
    instance_number: int,
    content_datetime: datetime,
    software_version: str,
    manufacturer: str = "triage",
    device_serial_number: str = "TRIAGE",
    institution_name: str | None = None,
) -> hd.seg.Segmentation:
    """A binary SEG of the lesion ``mask`` (frames, rows, columns) on ``source_images``.

    ``mask[f]`` is the lesion on ``source_images[f]`` (headers of the analysed series, single
    frame, one Frame of Reference), as `mask_on_source_slices` gives it. The segment is coded
    by `segment_codes(finding)`, with the model as its algorithm (name, version, family
    Artificial Intelligence). ``device_serial_number`` fills the required Device Serial Number
    of the equipment (software has none: the node's AE title is a good value). The times
    highdicom stamps with "now" are the content date/time (`dated`), so the same arguments
    always give the same object.
    """
    source_images = usable_headers(source_images, "source_images")
    frames = _check_mask(mask, source_images)
    require_code(finding, "finding")
    require_text(model_name, "model_name")
    require_text(model_version, "model_version")
    require_uid(series_instance_uid, "series_instance_uid")
    require_uid(sop_instance_uid, "sop_instance_uid")
    require_number(series_number, "series_number")
    require_number(instance_number, "instance_number")
    when = require_datetime(content_datetime, "content_datetime")
    require_text(software_version, "software_version")
    require_text(manufacturer, "manufacturer")
    require_text(device_serial_number, "device_serial_number")
    if institution_name is not None:
        require_text(institution_name, "institution_name")

    coded = segment_codes(finding)
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=finding.meaning[:LO_MAX],
        segmented_property_category=coded.category,
        segmented_property_type=coded.property_type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=model_name, family=ARTIFICIAL_INTELLIGENCE, version=model_version
        ),
        anatomic_regions=[coded.anatomic_region] if coded.anatomic_region else None,
        display_color=LESION_COLOUR,
    )
    images = list(source_images)
    try:
        seg = hd.seg.Segmentation(
            source_images=images,
            pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[segment],
            series_instance_uid=series_instance_uid,
            series_number=series_number,
            sop_instance_uid=sop_instance_uid,
            instance_number=instance_number,
            manufacturer=manufacturer,
            manufacturer_model_name=manufacturer,
            software_versions=software_version,
            device_serial_number=device_serial_number,
            content_label=CONTENT_LABEL,
            content_description=f"AI {finding.meaning}"[:LO_MAX],
            series_description=f"AI lesion {model_name} {model_version}"[:LO_MAX],
            institution_name=institution_name,
            content_date=when.date(),
            content_time=when.time(),
            series_date=when.date(),
            series_time=when.time(),
        )
    except (ValueError, TypeError, AttributeError):  # its text may quote a patient attribute
        raise TriageError(
            'the SEG cannot be built from "source_images": an attribute copied from the first '
            "image (Patient or General Study module) or the images' geometry is not valid DICOM"
        ) from None
    dated(seg, when)
    _stable_dimension_organization(seg, sop_instance_uid)
    return seg


def _stable_dimension_organization(seg: Dataset, sop_instance_uid: str) -> None:
    """highdicom draws a random Dimension Organization UID; one derived from the SEG's own
    instance keeps the same arguments making the same bytes."""
    new = generate_uid(entropy_srcs=["triage-seg-dimension-organization", sop_instance_uid])
    old = {str(item.DimensionOrganizationUID) for item in seg.DimensionOrganizationSequence}
    for item in [*seg.DimensionOrganizationSequence, *seg.DimensionIndexSequence]:
        if str(item.get("DimensionOrganizationUID", "")) in old:
            item.DimensionOrganizationUID = new


def read_lesion_segmentation(dataset: Dataset) -> LesionSegmentation:
    """The segment of a triage SEG and where each of its frames lies."""
    if not isinstance(dataset, Dataset):
        raise TriageError(f'Argument "dataset" must be a pydicom Dataset, got {type(dataset)}.')
    if str(dataset.get("SOPClassUID", "")) != SegmentationStorage:
        raise TriageError(
            'Argument "dataset" is not a Segmentation '
            f"(SOP class {dataset.get('SOPClassUID', 'absent')})."
        )
    try:
        seg = hd.seg.Segmentation.from_dataset(dataset)
        if seg.number_of_segments != 1:
            raise ValueError(f"it has {seg.number_of_segments} segments, a triage SEG has one")
        segment = seg.get_segment_description(1)
        algorithm = segment.algorithm_identification
        frames = tuple(_read_frame(item) for item in seg.PerFrameFunctionalGroupsSequence)
        shared = seg.SharedFunctionalGroupsSequence[0]
        orientation = tuple(
            float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient
        )
    except (ValueError, AttributeError, KeyError, IndexError) as exc:
        raise TriageError(f'Argument "dataset" is not a readable triage SEG: {exc}') from exc
    return LesionSegmentation(
        study_instance_uid=str(seg.StudyInstanceUID),
        series_instance_uid=str(seg.SeriesInstanceUID),
        sop_instance_uid=str(seg.SOPInstanceUID),
        instance_number=int(seg.InstanceNumber),
        frame_of_reference_uid=str(seg.FrameOfReferenceUID),
        source_series_instance_uids=tuple(
            str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", [])
        ),
        segment_label=str(segment.segment_label),
        category=_code(segment.segmented_property_category),
        property_type=_code(segment.segmented_property_type),
        anatomic_regions=tuple(_code(c) for c in segment.anatomic_regions),
        algorithm_name=str(algorithm[0].AlgorithmName) if algorithm else None,
        algorithm_version=str(algorithm[0].AlgorithmVersion) if algorithm else None,
        orientation=orientation,
        frames=frames,
    )


def _read_frame(item: Dataset) -> SegFrame:
    x, y, z = (float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient)
    source = None
    for derivation in item.get("DerivationImageSequence", []):
        for image in derivation.get("SourceImageSequence", []):
            source = str(image.ReferencedSOPInstanceUID)
    return SegFrame(position=(x, y, z), source_sop_instance_uid=source)


def _code(concept: hd.sr.CodedConcept) -> Code:
    return Code(concept.value, concept.scheme_designator, concept.meaning)


def _check_mask(mask: np.ndarray, source_images: Sequence[Dataset]) -> np.ndarray:
    """The mask as bool (frames, rows, columns) matching the source images, with a lesion."""
    frames = np.asarray(mask)
    geometries = [
        slice_geometry(image, f"source_images[{i}]") for i, image in enumerate(source_images)
    ]
    expected = (len(source_images), geometries[0].rows, geometries[0].columns)
    if frames.shape != expected:
        raise TriageError(
            f'Argument "mask" has shape {frames.shape}; it must be (frames, rows, columns) = '
            f"{expected}, one frame per source image (mask_on_source_slices gives it)."
        )
    if frames.dtype != np.bool_:
        if not np.isin(frames, (0, 1)).all():
            raise TriageError('Argument "mask" must be binary (bool, or only 0 and 1).')
        frames = frames.astype(bool)
    if not frames.any():
        raise TriageError(
            'Argument "mask" has no lesion pixel on any source image: there is nothing to '
            "segment (write no SEG for this result)."
        )
    references = {str(image.get("FrameOfReferenceUID", "") or "") for image in source_images}
    if "" in references or len(references) != 1:
        raise TriageError(
            'Argument "source_images" must share one FrameOfReferenceUID, which a SEG needs to '
            "lie on them."
        )
    return frames
