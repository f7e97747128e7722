"""Image frames with their geometry: the common ground of classic and enhanced DICOM images.

A classic CT/MR instance is one frame; an enhanced (multi-frame) instance holds many, each with
its own position, orientation, pixel spacing and rescale in the per-frame functional groups
(falling back to the shared functional groups, then to the top level). Volume assembly only
sees frames, so both kinds of object are assembled by the same code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import UID

from triage.errors import NotAVolumeError
from triage.imaging.reading import raw_text, raw_us

#: ImageType values (3rd value on) that mark an image that is not a slice of a diagnostic volume
LOCALIZER_TYPES = {"LOCALIZER", "SCOUT", "TOPOGRAM", "SURVIEW", "SCANOGRAM"}
SECONDARY_CAPTURE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.7",
    "1.2.840.10008.5.1.4.1.1.7.1",
    "1.2.840.10008.5.1.4.1.1.7.2",
    "1.2.840.10008.5.1.4.1.1.7.3",
    "1.2.840.10008.5.1.4.1.1.7.4",
}


@dataclass(frozen=True)
class Frame:
    """One 2D image of a series and where it lies in the patient (DICOM LPS, mm)."""

    source: str  # the file or store key, named in messages
    dataset: Dataset
    number: int | None  # 0-based frame index in a multi-frame instance; None for a classic image
    position: tuple[float, float, float]  # ImagePositionPatient: centre of the first pixel
    orientation: tuple[float, ...]  # ImageOrientationPatient: row direction, column direction
    pixel_spacing: tuple[float, float]  # DICOM order: between rows (dy), between columns (dx)
    rows: int
    columns: int
    slope: float
    intercept: float
    content: Dataset | None = None  # the frame's FrameContentSequence item (enhanced images)
    sop_instance_uid: str = ""

    @property
    def time_key(self) -> tuple[float, ...]:
        """Orders the frames of one position in a time series."""
        return _time_key(self.dataset, self.content, self.number or 0)

    @property
    def row_direction(self) -> np.ndarray:
        return np.asarray(self.orientation[:3], dtype=np.float64)

    @property
    def column_direction(self) -> np.ndarray:
        return np.asarray(self.orientation[3:], dtype=np.float64)

    @property
    def identity(self) -> tuple[str, int | None]:
        """The same SOP instance and frame: an exact duplicate whatever file it came from."""
        return (self.sop_instance_uid or self.source, self.number)


def _uid(ds: Dataset) -> str:
    try:
        return str(raw_text(ds, _SOP_INSTANCE_UID) or "")
    except Exception:  # a corrupt element: the file name identifies the frame instead
        return ""


def _first(ds: Dataset | None, sequence: str) -> Dataset | None:
    if ds is None or sequence not in ds:
        return None
    items = ds[sequence].value
    return items[0] if items else None


def _lookup(groups: Sequence[Dataset | None], sequence: str, keyword: str) -> Any:
    """The value of ``keyword`` in the functional group ``sequence``: per-frame, then shared."""
    for group in groups:
        item = _first(group, sequence)
        if item is not None and keyword in item and item[keyword].value not in (None, ""):
            return item[keyword].value
    return None


_TAGS: dict[str, int] = {
    keyword: int(tag_for_keyword(keyword) or 0)
    for keyword in (
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "PixelSpacing",
        "RescaleSlope",
        "RescaleIntercept",
    )
}
_IMAGE_TYPE, _SOP_CLASS_UID, _SOP_INSTANCE_UID = 0x00080008, 0x00080016, 0x00080018
_SAMPLES_PER_PIXEL, _NUMBER_OF_FRAMES, _ROWS, _COLUMNS = (
    0x00280002,
    0x00280008,
    0x00280010,
    0x00280011,
)
_PIXEL_DATA_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # pixel data: integer, float, double


def _top_level(ds: Dataset, keyword: str) -> Any:
    """A decimal-string attribute of the data set, parsed straight from its raw bytes when it
    has not been converted yet (pydicom's conversion and validation cost about 1 ms a slice)."""
    return raw_text(ds, _TAGS[keyword])


def whole_number(value: Any) -> int:
    """An integer string (IS) or number as an int; ValueError when it is not a whole number."""
    number = float(value)
    if not number.is_integer():
        raise ValueError(f"{value!r} is not a whole number")
    return int(number)


def _floats(value: Any, count: int, what: str, source: str) -> tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise NotAVolumeError(f"{source}: {what} is not numeric ({value!r})") from exc
    if len(numbers) != count or not all(map(math.isfinite, numbers)):
        raise NotAVolumeError(f"{source}: {what} must hold {count} finite numbers, got {value!r}")
    return numbers


def _number(value: Any, default: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _time_key(ds: Dataset, content: Dataset | None, fallback: int) -> tuple[float, ...]:
    """What orders repeated acquisitions of one position: temporal position, trigger time,
    acquisition number and time, then instance/frame number."""
    keys = []
    if content is not None:
        keys.append(_number(content.get("TemporalPositionIndex"), 0))
    for keyword in ("TemporalPositionIdentifier", "TriggerTime", "AcquisitionNumber"):
        keys.append(_number(ds.get(keyword), 0))
    for keyword in ("AcquisitionTime", "ContentTime"):
        keys.append(_number(str(ds.get(keyword, "") or "").replace(":", ""), 0))
    keys.append(_number(ds.get("InstanceNumber"), 0))
    keys.append(float(fallback))
    return tuple(keys)


def is_localizer(ds: Dataset) -> bool:
    """ImageType says LOCALIZER (or a vendor's word for a scout) in its third value or later."""
    image_type = raw_text(ds, _IMAGE_TYPE) or []
    values = [image_type] if isinstance(image_type, str) else list(image_type)
    return bool(LOCALIZER_TYPES.intersection(str(v).upper() for v in values[2:]))


def not_an_image_reason(ds: Dataset) -> str | None:
    """Why an instance cannot be part of a volume before looking at geometry, or None."""
    sop_class = str(raw_text(ds, _SOP_CLASS_UID) or "")
    if not any(tag in ds for tag in _PIXEL_DATA_TAGS):
        name = UID(sop_class).name if sop_class else "unknown SOP class"
        return f"no pixel data: not an image ({name})"
    if is_localizer(ds):
        return "localizer (scout) image"
    if sop_class in SECONDARY_CAPTURE_CLASSES:
        return "secondary capture: not a slice of an acquired volume"
    if int(raw_us(ds, _SAMPLES_PER_PIXEL) or 1) != 1:
        return f"colour image ({ds.get('PhotometricInterpretation', '?')}): not a CT/MR slice"
    return None


def frames_of(ds: Dataset, source: str) -> list[Frame]:
    """The frames of one instance with their geometry; NotAVolumeError names what is missing."""
    reason = not_an_image_reason(ds)
    if reason:
        raise NotAVolumeError(f"{source}: {reason}")
    try:
        count = whole_number(raw_text(ds, _NUMBER_OF_FRAMES) or 1)
        rows, columns = int(raw_us(ds, _ROWS)), int(raw_us(ds, _COLUMNS))
    except (AttributeError, TypeError, ValueError) as exc:
        raise NotAVolumeError(f"{source}: Rows/Columns/NumberOfFrames unusable: {exc}") from exc
    if count < 1 or rows < 1 or columns < 1:
        raise NotAVolumeError(f"{source}: empty image ({rows} x {columns}, {count} frame(s))")
    shared = _first(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    enhanced = per_frame is not None or shared is not None
    if enhanced and per_frame is not None and len(per_frame) != count:
        raise NotAVolumeError(
            f"{source}: {len(per_frame)} per-frame functional groups for {count} frames"
        )
    if not enhanced and count > 1:
        raise NotAVolumeError(
            f"{source}: {count} frames without functional groups: positions per frame unknown"
        )
    frames = []
    for index in range(count):
        own = per_frame[index] if per_frame is not None else None
        groups = [own, shared] if enhanced else []
        frames.append(_frame(ds, source, index if enhanced else None, groups, rows, columns))
    return frames


def _frame(
    ds: Dataset,
    source: str,
    number: int | None,
    groups: list[Dataset | None],
    rows: int,
    columns: int,
) -> Frame:
    where = source if number is None else f"{source} frame {number + 1}"

    def attribute(sequence: str, keyword: str) -> Any:
        value = _lookup(groups, sequence, keyword) if groups else None
        return value if value is not None else _top_level(ds, keyword)

    position = attribute("PlanePositionSequence", "ImagePositionPatient")
    orientation = attribute("PlaneOrientationSequence", "ImageOrientationPatient")
    spacing = attribute("PixelMeasuresSequence", "PixelSpacing")
    for keyword, value in (
        ("ImagePositionPatient", position),
        ("ImageOrientationPatient", orientation),
        ("PixelSpacing", spacing),
    ):
        if value is None or value == "":
            raise NotAVolumeError(f"{where}: no {keyword}, so its place in the patient is unknown")
    iop = _floats(orientation, 6, "ImageOrientationPatient", where)
    row, col = iop[:3], iop[3:]
    if (
        abs(math.hypot(*row) - 1) > 0.01
        or abs(math.hypot(*col) - 1) > 0.01
        or abs(sum(r * c for r, c in zip(row, col, strict=True))) > 0.01
    ):
        raise NotAVolumeError(f"{where}: ImageOrientationPatient is not two unit, orthogonal axes")
    pixel_spacing = _floats(spacing, 2, "PixelSpacing", where)
    if min(pixel_spacing) <= 0:
        raise NotAVolumeError(f"{where}: PixelSpacing must be positive, got {list(pixel_spacing)}")
    slope = attribute("PixelValueTransformationSequence", "RescaleSlope")
    intercept = attribute("PixelValueTransformationSequence", "RescaleIntercept")
    content = _first(groups[0], "FrameContentSequence") if groups else None
    xyz = _floats(position, 3, "ImagePositionPatient", where)
    return Frame(
        source=source,
        dataset=ds,
        number=number,
        position=(xyz[0], xyz[1], xyz[2]),
        orientation=iop,
        pixel_spacing=(pixel_spacing[0], pixel_spacing[1]),
        rows=rows,
        columns=columns,
        slope=_number(slope, 1.0) or 1.0,
        intercept=_number(intercept, 0.0),
        content=content,
        sop_instance_uid=_uid(ds),
    )
