"""A model result recorded the way a triage run records it: claimed, reported, finished."""

from __future__ import annotations

from collections.abc import Sequence

from triage.app import pipeline
from triage.app.services import Services
from triage.results import ModelResult


def record_results(svc: Services, study_uid: str, results: Sequence[ModelResult]) -> str:
    """Claim the study, write the documents of these results and record the run (their objects
    go to the outbox); returns the SR SOP Instance UID of the first result's document."""
    generation = svc.catalogue.claim_for_triage(study_uid)
    assert generation is not None, f"study {study_uid} cannot be claimed for triage"
    analyses = [
        pipeline.Analysis(
            r.model_name,
            r,
            model_version=r.model_version,
            series_instance_uid=r.series_instance_uid,
            role=r.role,
        )
        for r in results
    ]
    plan = pipeline.report(svc, study_uid, analyses)
    assert pipeline.finish(svc, study_uid, generation, analyses, plan, {}) is not None
    heads = svc.catalogue.chain_heads(study_uid)
    uid = heads[results[0].model_name].released_sr_sop_instance_uid
    assert uid is not None, "the result was not released into the outbox"
    return uid
