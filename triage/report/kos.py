"""The key images of a positive finding as a DICOM Key Object Selection, and reading it back.

A viewer opens a study at the slices a Key Object Selection (KOS) document points at, and most
PACS mark those images as key images: the radiologist sees at once where the AI looked. One KOS
per positive finding of one model version on one analysed series, in the same study as the
images, in its own series. The caller gives UIDs, series and instance numbers and the content
date/time (a revision is a new instance in the same series with a higher InstanceNumber).
Every code used is a module constant below; docs/conformance.md lists them with those highdicom
adds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import KeyObjectSelectionDocumentStorage

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
from triage.report.revisions import device_observer_uid

# --- Codes (each in pydicom.sr.codedict.codes; tests check it) ----------------------------------
#: Document title, CID 7010 "Key Object Selection Document Title" = codes.DCM.OfInterest: the
#: title a viewer shows for images flagged for attention, without claiming a purpose (teaching,
#: surgery...) or a quality rejection, which the other CID 7010 titles do.
KOS_TITLE = Code("113000", "DCM", "Of Interest")
#: Concept name of the description text (TID 2010; written by highdicom).
KEY_OBJECT_DESCRIPTION = Code("113012", "DCM", "Key Object Description")


@dataclass(frozen=True)
class KeyImageSelection:
    """A Key Object Selection document as read back: what the worklist and tests need."""

    study_instance_uid: str
    series_instance_uid: str  # of the KOS itself
    sop_instance_uid: str
    instance_number: int
    title: Code
    description: str | None
    observer_name: str | None  # the model (device observer)
    observer_uid: str | None
    #: the key images, in the document's order (nearest to the finding first when written by
    #: `build_key_object_selection` from `triage.analysis.source_slices.key_images`)
    key_sop_instance_uids: tuple[str, ...]
    key_series_instance_uids: tuple[str, ...]


def key_image_description(finding: Code, model_name: str, model_version: str) -> str:
    """The text a viewer shows with the key images: the finding, who found it, unreviewed."""
    return (
        f"AI finding: {finding.meaning}. Key image(s) chosen by the AI model {model_name} "
        f"{model_version}; not reviewed by a radiologist."
    )


def build_key_object_selection(
    key_images: Sequence[Dataset],
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
    institution_name: str | None = None,
    title: Code = KOS_TITLE,
) -> hd.ko.KeyObjectSelectionDocument:
    """A KOS pointing at ``key_images`` (headers of images of the analysed series).

    The key images are referenced in the order given (`key_images` of source_slices gives the
    nearest to the finding first). Patient and study come from the first key image, with absent
    type 2 attributes written empty (`usable_headers`). The device observer is the
    model, named as in the triage SR (same Device Observer UID). The times highdicom stamps
    with "now" are the content date/time (`dated`), so the same arguments always give the same
    object.
    """
    key_images = usable_headers(key_images, "key_images")
    require_code(finding, "finding")
    require_code(title, "title")
    require_text(model_name, "model_name")
    require_text(model_version, "model_version")
    require_uid(series_instance_uid, "series_instance_uid")
    require_uid(sop_instance_uid, "sop_instance_uid")
    require_number(series_number, "series_number")
    require_number(instance_number, "instance_number")
    when = require_datetime(content_datetime, "content_datetime")
    require_text(software_version, "software_version")
    require_text(manufacturer, "manufacturer")
    if institution_name is not None:
        require_text(institution_name, "institution_name")
    missing = [
        i for i, image in enumerate(key_images) if "Rows" not in image or "Columns" not in image
    ]
    if missing:
        raise TriageError(
            f'Argument "key_images" items {missing} are not images (no Rows/Columns): a key '
            "image must be an image of the analysed series."
        )

    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_observer_uid(model_name, model_version),
            name=model_name,
            manufacturer_name=manufacturer,
            model_name=model_name,
        ),
    )
    content = hd.ko.KeyObjectSelection(
        document_title=title,
        referenced_objects=list(key_images),
        observer_device_context=observer,
        description=key_image_description(finding, model_name, model_version),
    )
    evidence = list(key_images)
    try:
        document = hd.ko.KeyObjectSelectionDocument(
            evidence=evidence,
            content=content,
            series_instance_uid=series_instance_uid,
            series_number=series_number,
            sop_instance_uid=sop_instance_uid,
            instance_number=instance_number,
            manufacturer=manufacturer,
            institution_name=institution_name,
            series_description=f"AI key images {model_name} {model_version}"[:LO_MAX],
            manufacturer_model_name=manufacturer,
            software_versions=software_version,
            content_date=when.date(),
            content_time=when.time(),
            series_date=when.date(),
            series_time=when.time(),
        )
    except (ValueError, TypeError, AttributeError):  # its text may quote a patient attribute
        raise TriageError(
            'the KOS cannot be built from "key_images": an attribute copied from the first '
            "image (Patient or General Study module) is not valid DICOM"
        ) from None
    dated(document, when)
    return document


def read_key_object_selection(dataset: Dataset) -> KeyImageSelection:
    """The key images and description of a Key Object Selection document."""
    if not isinstance(dataset, Dataset):
        raise TriageError(f'Argument "dataset" must be a pydicom Dataset, got {type(dataset)}.')
    if str(dataset.get("SOPClassUID", "")) != KeyObjectSelectionDocumentStorage:
        raise TriageError(
            'Argument "dataset" is not a Key Object Selection Document '
            f"(SOP class {dataset.get('SOPClassUID', 'absent')})."
        )
    try:
        document = hd.ko.KeyObjectSelectionDocument.from_dataset(dataset)
        content = document.content
        references = content.get_references()
        observers = content.get_observer_contexts(observer_type=codes.DCM.Device)
        series = [document.resolve_reference(r.referenced_sop_instance_uid)[1] for r in references]
    except (ValueError, AttributeError, KeyError, IndexError) as exc:
        raise TriageError(
            f'Argument "dataset" is not a readable Key Object Selection: {exc}'
        ) from exc
    root = content[0]
    texts = [
        str(item.value)
        for item in root.ContentSequence
        if item.name == KEY_OBJECT_DESCRIPTION and item.value_type == hd.sr.ValueTypeValues.TEXT
    ]
    observer = observers[0].observer_identifying_attributes if observers else None
    title = root.name
    return KeyImageSelection(
        study_instance_uid=str(document.StudyInstanceUID),
        series_instance_uid=str(document.SeriesInstanceUID),
        sop_instance_uid=str(document.SOPInstanceUID),
        instance_number=int(document.InstanceNumber),
        title=Code(title.value, title.scheme_designator, title.meaning),
        description=texts[0] if texts else None,
        observer_name=getattr(observer, "name", None),
        observer_uid=getattr(observer, "uid", None),
        key_sop_instance_uids=tuple(str(r.referenced_sop_instance_uid) for r in references),
        key_series_instance_uids=tuple(series),
    )
