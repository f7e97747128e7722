"""What a clean run of the shipped model gives, to compare a node's results with."""

from __future__ import annotations

from triage.analysis.selection import select_series
from triage.catalogue import Catalogue
from triage.config import PROJECT_ROOT
from triage.modelops.bundle import discover_models
from triage.report.sr import sr_uids


def expected_sr_uid(catalogue: Catalogue, study_uid: str) -> str:
    """The SR's SOPInstanceUID a clean run of the shipped model gives: from (study, model,
    version, input series)."""
    (model,) = discover_models(PROJECT_ROOT / "models")
    series, reason = select_series(model.rule, catalogue.series_of(study_uid))
    assert series is not None, reason
    return sr_uids(
        study_uid, model.name, model.version, [series.series_instance_uid]
    ).sop_instance_uid
