"""What a clean run of the shipped model gives, to compare a node's results with."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydicom.sr.coding import Code
from sqlalchemy import select

from triage.catalogue import Catalogue, Result, Study
from triage.report.revisions import Revision, instance_uid, result_fingerprint
from triage.results import ModelResult, Priority


def expected_sr_uid(catalogue: Catalogue, study_uid: str) -> str | None:
    """The SR's SOPInstanceUID a clean run gives: the first revision of the active model's
    chain, derived from the result the catalogue holds and the images of its series (None
    before the result is recorded). The same study and result always give it, whatever
    crashed and ran again in between."""
    with catalogue.session() as s:
        rows = list(
            s.scalars(
                select(Result)
                .join(Study, Study.id == Result.study_id)
                .where(Study.study_instance_uid == study_uid, Result.role == "active")
            )
        )
    if not rows:
        return None
    (row,) = rows
    series = {x.series_instance_uid: x for x in catalogue.series_of(study_uid)}
    images = [Path(key).stem for key in series[row.series_instance_uid].keys]
    result = ModelResult(
        row.model_name,
        row.model_version,
        Code(row.finding_value, row.finding_scheme, row.finding_meaning),
        row.probability,
        row.threshold,
        Priority(row.priority),
        row.series_instance_uid,
        lesion_volume_ml=None,
    )
    fingerprint = result_fingerprint(result, images)
    return instance_uid(study_uid, Revision(row.model_name, 1, fingerprint, datetime.now()))
