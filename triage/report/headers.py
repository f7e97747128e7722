"""Source headers as the writers of SR, KOS and SEG can use them: every real header makes one.

Anonymised and research studies often lack type 2 attributes (PatientBirthDate, PatientSex,
ReferringPhysicianName, AccessionNumber...); the standard lets them be present and empty, and
that is how they are written. Dates and times an old system wrote in another format are left
empty, and a de-identified source that does not say how is said to be so. Enhanced multi-frame
images carry their geometry in functional groups; the SR's image library describes them by
their first frame. Only what truly cannot be used (no UIDs, a header that is not an image)
stops the writer, and the message says what it is in words. No value of a patient attribute
is ever quoted in a message or a log.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.valuerep import DA, TM

from triage.attributes import text_value
from triage.errors import TriageError
from triage.imaging.reading import raw_text

log = logging.getLogger(__name__)

#: Type 2 attributes of the Patient and General Study modules that the objects copy from their
#: source: written empty when the source lacks them.
PATIENT_AND_STUDY_TYPE_2 = (
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
#: Without these no object can name its source.
REQUIRED = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
#: The image library describes a cross-sectional image by its geometry (TID 1604).
CROSS_SECTIONAL = ("CT", "MR", "PT")
_GEOMETRY = ("PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "SliceThickness")
_DATES = (("PatientBirthDate", DA), ("StudyDate", DA), ("StudyTime", TM))
#: Said when the source says its patient identity was removed but not how (type 1C then).
DEIDENTIFICATION_NOT_STATED = "not stated in the source images"


def usable_headers(images: Sequence[Dataset], argument: str = "source_images") -> list[Dataset]:
    """The headers, completed where the standard allows it (copies; the caller's are unchanged).

    TriageError when a header cannot name its source (a UID missing) or the images are not one
    series of one study.
    """
    if isinstance(images, Dataset) or not images:
        raise TriageError(
            f'Argument "{argument}" must be a non-empty sequence of image headers '
            "(pydicom Datasets) of one series."
        )
    out: list[Dataset] = []
    seen: set[str] = set()
    for position, image in enumerate(images):
        where = f'Argument "{argument}" item {position}'
        if not isinstance(image, Dataset):
            raise TriageError(f"{where} must be a pydicom Dataset, got {type(image)}.")
        missing = [k for k in REQUIRED if not _text(image, k)]
        if missing:
            raise TriageError(
                f"{where} cannot be named in the result: it has no {', '.join(missing)}"
            )
        uid = _text(image, "SOPInstanceUID")
        if uid in seen:
            raise TriageError(f"{where} repeats SOPInstanceUID {uid}.")
        seen.add(uid)
        out.append(_completed(image, where, first=position == 0))
    first = out[0]
    for image in out[1:]:
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
            if _text(image, keyword) != _text(first, keyword):
                raise TriageError(
                    f'Argument "{argument}" must be one series of one study; {keyword} differs '
                    f"({_text(first, keyword)} vs {_text(image, keyword)})."
                )
    return out


def _text(image: Dataset, keyword: str) -> str:
    """``text_value`` of a UID or code string, from the element's bytes while pydicom has not
    converted it (`raw_text`): these checks run over every image of a series, and pydicom's
    conversion and validation of each value would cost more than the rest of the check."""
    value = raw_text(image, tag_for_keyword(keyword) or 0)
    if value is None:
        return ""
    return "\\".join(str(v) for v in value) if isinstance(value, list) else str(value)


def study_header(image: Dataset) -> Dataset:
    """The Patient and General Study attributes of any instance of the study, completed: what a
    document about the whole study (not analysed) copies."""
    return usable_headers([image], "study_images")[0]


def _completed(image: Dataset, where: str, *, first: bool) -> Dataset:
    """The header with what the writers need; a copy only when something had to be added."""
    fixes: list[tuple[str, object]] = []
    if first:  # the objects copy the Patient and General Study modules from the first one
        fixes += [(k, "") for k in PATIENT_AND_STUDY_TYPE_2 if k not in image]
        for keyword, vr in _DATES:
            if keyword in image and not _converts(vr, image.get(keyword)):
                log.warning(
                    "%s of study %s is not valid DICOM; the result leaves it empty",
                    keyword,
                    text_value(image, "StudyInstanceUID"),
                )
                fixes.append((keyword, ""))
        if (
            text_value(image, "PatientIdentityRemoved").upper() == "YES"
            and not text_value(image, "DeidentificationMethod")
            and not image.get("DeidentificationMethodCodeSequence")
        ):
            fixes.append(("DeidentificationMethod", DEIDENTIFICATION_NOT_STATED))
        if text_value(image, "PatientSex") not in ("", "M", "F", "O"):
            log.warning(
                "PatientSex of study %s is not M, F or O; the result leaves it empty",
                text_value(image, "StudyInstanceUID"),
            )
            fixes.append(("PatientSex", ""))
    if _text(image, "Modality") in CROSS_SECTIONAL and not all(_text(image, k) for k in _GEOMETRY):
        fixes += _first_frame_geometry(image, where)
    if not fixes:
        return image
    fixed = Dataset()  # the same elements in a new data set: the caller's stays as it was
    for element in image.elements():
        fixed[element.tag] = element
    for keyword, value in fixes:
        if keyword in fixed:
            del fixed[keyword]  # replaced by a new element, not changed in place
        setattr(fixed, keyword, value)
    return fixed


def _first_frame_geometry(image: Dataset, where: str) -> list[tuple[str, object]]:
    """Geometry for the image library from the first frame (enhanced multi-frame images keep it
    in functional groups), or TriageError saying in words what is missing."""
    found: dict[str, object] = {}
    for keyword, sequence in (
        ("ImagePositionPatient", "PlanePositionSequence"),
        ("ImageOrientationPatient", "PlaneOrientationSequence"),
        ("PixelSpacing", "PixelMeasuresSequence"),
        ("SliceThickness", "PixelMeasuresSequence"),
    ):
        if text_value(image, keyword):
            continue
        item = _functional(image, sequence)
        value = item.get(keyword) if item is not None else None
        if value not in (None, ""):
            found[keyword] = value
    missing = [k for k in _GEOMETRY[:3] if not text_value(image, k) and k not in found]
    if missing:
        raise TriageError(
            f"{where} is a {text_value(image, 'Modality')} image without "
            f"{', '.join(missing)}: its place in the patient is unknown, so the result cannot "
            "describe it"
        )
    if not text_value(image, "SliceThickness") and "SliceThickness" not in found:
        log.warning(
            "an image of series %s has no slice thickness; the SR says 0",
            text_value(image, "SeriesInstanceUID"),
        )
        found["SliceThickness"] = "0"  # type 2 in the CT and MR image modules: unknown
    return list(found.items())


def _functional(image: Dataset, sequence: str) -> Dataset | None:
    """The item of ``sequence`` for the first frame: per-frame groups first, then shared."""
    for groups in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        items = image.get(groups)
        if items and sequence in items[0] and items[0][sequence].value:
            return items[0][sequence][0]
    return None


def _converts(vr: type[DA] | type[TM], value: object) -> bool:
    try:
        vr(value)
    except ValueError:
        return False
    return True


def volume_ends(headers: Sequence[Dataset]) -> list[Dataset]:
    """The images at the two ends of the series along its slice direction (one image for a
    single or multi-frame instance, or headers without geometry): what the SR's image library
    lists. Every image analysed is in the document's evidence; the library, the images the
    content refers to, gives a reader the volume's extent and geometry in two entries - and
    building it stays fast for a series of any length (a library entry per image made the SR of
    a 200-image series take seconds)."""
    if len(headers) < 2:
        return list(headers[:1])
    try:
        row, column = (
            [float(v) for v in headers[0].ImageOrientationPatient[:3]],
            [float(v) for v in headers[0].ImageOrientationPatient[3:]],
        )
        normal = (
            row[1] * column[2] - row[2] * column[1],
            row[2] * column[0] - row[0] * column[2],
            row[0] * column[1] - row[1] * column[0],
        )
        along = [
            sum(float(p) * n for p, n in zip(h.ImagePositionPatient, normal, strict=True))
            for h in headers
        ]
    except (AttributeError, TypeError, ValueError, IndexError):
        return [headers[0]]
    first = min(range(len(headers)), key=along.__getitem__)
    last = max(range(len(headers)), key=along.__getitem__)
    return [headers[first]] if first == last else [headers[first], headers[last]]
