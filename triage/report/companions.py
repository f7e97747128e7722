"""What a viewer shows beside a positive result's SR: a Key Object Selection pointing at the key
slice, and - for a segmentation model - a DICOM Segmentation of the lesion on the source slices.

Both belong to the SR's revision: a series per model and kind, the InstanceNumber and content
date/time of the revision, SOP Instance UIDs derived from it (`triage.report.revisions`). A
companion that cannot be made (no key point, a lesion that falls outside the source slices) is
left out with a warning; the SR goes out all the same.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pydicom.dataset import Dataset

from triage.analysis.evidence import lesion_of
from triage.analysis.source_slices import key_images, mask_on_source_slices
from triage.errors import StorageError, TriageError
from triage.report.kos import build_key_object_selection
from triage.report.revisions import Revision, instance_uid, series_number, series_uid
from triage.report.seg import build_lesion_segmentation
from triage.results import ModelResult
from triage.store import ObjectStore

log = logging.getLogger(__name__)

#: how many slices the KOS points at: the one nearest the finding
KEY_IMAGES = 1


def key_images_of(result: ModelResult, headers: Sequence[Dataset]) -> list[Dataset]:
    """The source images nearest the positive finding's key point (none without one)."""
    if not result.positive or result.key_point_lps is None or not headers:
        return []
    try:
        return key_images(list(headers), result.key_point_lps, KEY_IMAGES)
    except TriageError as exc:
        log.warning("no key image for %s: %s", result.model_name, exc)
        return []


def companions(
    store: ObjectStore,
    study_uid: str,
    result: ModelResult,
    headers: Sequence[Dataset],
    keys: Sequence[Dataset],
    revision: Revision,
    *,
    software_version: str,
) -> dict[str, Dataset]:
    """The KOS (when there are key images) and the SEG (when the result has a lesion mask) of
    a revision, by kind."""
    out: dict[str, Dataset] = {}
    if keys:
        try:
            out["kos"] = build_key_object_selection(
                list(keys),
                **_placed(study_uid, result, revision, "kos", software_version),
            )
        except TriageError as exc:
            log.warning("no KOS for %s: %s", result.model_name, exc)
    if result.lesion_mask_key is not None:
        try:
            mask, affine = lesion_of(store, result.lesion_mask_key)
            frames = mask_on_source_slices(mask, affine, list(headers))
            out["seg"] = build_lesion_segmentation(
                list(headers),
                frames,
                **_placed(study_uid, result, revision, "seg", software_version),
            )
        except (TriageError, StorageError) as exc:
            log.warning("no SEG for %s: %s", result.model_name, exc)
    return out


def _placed(
    study_uid: str, result: ModelResult, revision: Revision, kind: str, software_version: str
) -> dict[str, Any]:
    """What the KOS and the SEG of a revision share: the result they show, and their place in
    the revision's chain (series, number, instance UID, time) for their kind."""
    return {
        "finding": result.finding,
        "model_name": result.model_name,
        "model_version": result.model_version,
        "series_instance_uid": series_uid(study_uid, revision.chain, kind),
        "series_number": series_number(revision.chain, kind),
        "sop_instance_uid": instance_uid(study_uid, revision, kind),
        "instance_number": revision.number,
        "content_datetime": revision.content_datetime,
        "software_version": software_version,
    }
