"""Triage of one complete study, as plain functions that the Prefect flow wraps.

plan -> analyse (assemble, preprocess, infer) per model -> report (each active model's result,
or why there is none, as the next revision of its document, built and stored) -> finish (the
outcome recorded in one transaction: priority, results, revisions released into the outbox or
held). Each failure that concerns one study becomes *not analysed* with a reason - itself a
document the PACS gets; it never stops other studies.

Models in shadow mode (`triage.modelops.registry`) are planned and analysed like the active
ones, and their results are recorded; they never set the priority, never write a document and
never make a study *not analysed*.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from triage import __version__
from triage.analysis.evidence import keep_lesion
from triage.analysis.inference import Score, score
from triage.analysis.input_cache import ModelInput, input_key
from triage.analysis.model import TriageModel
from triage.analysis.ood import input_statistics
from triage.analysis.preprocess import model_input_with_affine
from triage.analysis.priority import priority_for, study_priority
from triage.analysis.saliency import key_point
from triage.analysis.selection import select_series
from triage.app.services import Services
from triage.errors import ModelError, NotAVolumeError, StorageError
from triage.imaging.volume import AssemblyOptions, assemble_volume
from triage.report.documents import ChainOutcome, ReportPlan, write_documents
from triage.report.revisions import NODE_CHAIN
from triage.results import SHADOW, ModelResult, Priority, Role, is_uncertain

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Assignment:
    """Which series a model will run on, or why it will not run."""

    model_name: str
    series_instance_uid: str | None
    reason: str = ""
    model_version: str = ""
    role: str = Role.ACTIVE
    #: the study is of the model's kind (`SeriesRule.applies_to`)
    applies: bool = True


@dataclass
class Analysis:
    model_name: str
    result: ModelResult | None
    reason: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    role: str = Role.ACTIVE
    model_version: str = ""
    #: the series the model looked at (analysed, or tried and failed on)
    series_instance_uid: str | None = None
    #: the study is of the model's kind: when it fails, it says why in the PACS
    applies: bool = True


def plan_study(svc: Services, study_uid: str) -> list[Assignment]:
    models = svc.refresh_models()
    if not any(m.role != SHADOW for m in models):
        what = "no active model" if models else "no model is registered"
        return [Assignment("", None, f"{what} on this node")] + _plan(svc, study_uid, models)
    return _plan(svc, study_uid, models)


def _plan(svc: Services, study_uid: str, models: list[TriageModel]) -> list[Assignment]:
    candidates = svc.catalogue.series_of(study_uid) if models else []
    plan = []
    for model in models:
        series, reason = select_series(model.rule, candidates)
        plan.append(
            Assignment(
                model.name,
                series.series_instance_uid if series else None,
                reason,
                model.version,
                model.role,
                applies=series is not None or model.rule.applies_to(candidates),
            )
        )
    return plan


def analyse(svc: Services, study_uid: str, assignment: Assignment) -> Analysis:
    """Assemble the series, run the model, turn its probability into a priority."""
    analysis = _analyse(svc, study_uid, assignment)
    analysis.role = assignment.role
    analysis.applies = assignment.applies
    if assignment.role == SHADOW:
        if analysis.result is None and analysis.reason:
            # nothing else reports it: a shadow model never makes a study *not analysed*
            level = logging.INFO if assignment.series_instance_uid is None else logging.WARNING
            log.log(level, "shadow model %s: %s", assignment.model_name, analysis.reason)
        analysis.timings = {"shadow_s": sum(analysis.timings.values())}
    return analysis


def _analyse(svc: Services, study_uid: str, assignment: Assignment) -> Analysis:
    model = svc.model(assignment.model_name, assignment.model_version or None)

    def failed(reason: str, series_uid: str | None = None) -> Analysis:
        return Analysis(
            model.name, None, reason, model_version=model.version, series_instance_uid=series_uid
        )

    if assignment.series_instance_uid is None:
        return failed(assignment.reason)
    series = next(
        (
            s
            for s in svc.catalogue.series_of(study_uid)
            if s.series_instance_uid == assignment.series_instance_uid
        ),
        None,
    )
    if series is None:
        return failed("the selected series is no longer in the catalogue")
    try:
        t0 = time.perf_counter()
        options = AssemblyOptions(uneven_spacing=svc.settings.uneven_spacing)
        key = input_key(series.keys, options, model.input, svc.device)
        made = svc.inputs.get(key)  # another model with this input made it from this series
        t1 = t0
        if made is None:
            volume = assemble_volume(svc.store.get, series.keys, options)
            if assignment.role != SHADOW:  # the report reads them next, not from the store
                svc.headers.keep(volume.sources)  # the volume has the pixels: dropped there
            for warning in volume.warnings:
                log.info("series %s: %s", series.series_instance_uid, warning)
            t1 = time.perf_counter()
            x, affine = model_input_with_affine(
                volume.array, volume.affine_lps, model.input, svc.device
            )
            if svc.device.type == "cuda":
                torch.cuda.synchronize(svc.device)
            made = ModelInput(x, affine, volume.series_instance_uid)
            svc.inputs.keep(key, made)
        x, affine = made.x, made.affine_lps
        t2 = time.perf_counter()
        verdict = score(model, x, affine, svc.device, svc.amp)
        p = verdict.probability
        ood = ood_threshold = None
        if model.reference is not None:
            ood = model.reference.score(input_statistics(x, model.input.pixdim))
            ood_threshold = model.reference.threshold
        t3 = time.perf_counter()
    except NotAVolumeError as exc:
        label = series.series_number or series.series_description or "?"
        return failed(f"series {label} is not a volume: {exc}", series.series_instance_uid)
    except (ModelError, StorageError) as exc:
        return failed(str(exc), series.series_instance_uid)
    except MemoryError:
        return failed(f"out of memory while running {model.name}", series.series_instance_uid)
    timings = {"assemble_s": t1 - t0, "preprocess_s": t2 - t1, "infer_s": t3 - t2}
    result = ModelResult(
        model_name=model.name,
        model_version=model.version,
        finding=model.finding,
        probability=p,
        threshold=model.threshold,
        priority=priority_for(
            p,
            model.threshold,
            model.positive_priority,
            uncertain=is_uncertain(ood, ood_threshold),
        ),
        series_instance_uid=made.series_instance_uid,
        role=assignment.role,
        lesion_volume_ml=verdict.lesion_volume_ml,
        lesion_centre_lps=verdict.lesion_centre_lps,
        ood_score=ood,
        ood_threshold=ood_threshold,
    )
    if result.positive and assignment.role != SHADOW:
        result = _with_evidence(svc, study_uid, model, result, verdict, x, affine)
    log.info(
        "model %s %s (%s): p=%.3f -> %s%s (%.2fs)",
        model.name,
        model.version,
        assignment.role,
        p,
        result.priority.value,
        ", uncertain: input unlike the training data" if result.uncertain else "",
        t3 - t0,
    )
    return Analysis(
        model.name,
        result,
        "",
        timings,
        model_version=model.version,
        series_instance_uid=made.series_instance_uid,
    )


def _with_evidence(
    svc: Services,
    study_uid: str,
    model: TriageModel,
    result: ModelResult,
    verdict: Score,
    x: torch.Tensor,
    affine: Any,
) -> ModelResult:
    """Where a positive finding is, for what a viewer shows (the key slice, the lesion): a
    segmentation model's lesion mask kept in the store, a classifier's most salient point.
    Without it the result still goes out; only the KOS or SEG is left out."""
    if verdict.lesion_mask is not None and verdict.mask_affine_lps is not None:
        if not verdict.lesion_mask.any():
            return result
        try:
            key = keep_lesion(
                svc.store, study_uid, model.name, verdict.lesion_mask, verdict.mask_affine_lps
            )
        except StorageError as exc:
            log.warning("the lesion of %s is not kept for its SEG: %s", model.name, exc)
            return result
        return dataclasses.replace(
            result, lesion_mask_key=key, key_point_lps=verdict.lesion_centre_lps
        )
    try:
        point = key_point(model, x, affine, svc.device)
    except ModelError as exc:
        log.warning("no key point for %s, so no key image: %s", model.name, exc)
        return result
    return dataclasses.replace(result, key_point_lps=point.point_lps)


def report(svc: Services, study_uid: str, analyses: list[Analysis]) -> ReportPlan:
    """Build and store the documents of this run, one per active model: its result when the
    study was analysed; when it was not, why, for every active model (or for the node, when no
    model is active). Shadow models write nothing. Nothing is queued until `finish`."""
    active = [a for a in analyses if a.role != SHADOW]
    analysed = [a for a in active if a.result is not None]
    if analysed:
        outcomes = [
            ChainOutcome(
                a.model_name,
                a.model_version,
                a.result,
                series_instance_uid=a.series_instance_uid,
            )
            for a in analysed
        ]
    else:
        # each model the study is meant for says why it could not analyse it; when none is
        # (a study of another kind, no model active) the node says so, with every reason
        failed = [a for a in active if a.model_name and a.applies]
        outcomes = [
            ChainOutcome(
                a.model_name,
                a.model_version,
                None,
                a.reason,
                finding=_finding_of(svc, a),
                series_instance_uid=a.series_instance_uid,
            )
            for a in failed
        ] or [ChainOutcome(NODE_CHAIN, reason=_node_reason(active))]
    t0 = time.perf_counter()
    plan = write_documents(
        svc.store,
        svc.catalogue,
        svc.settings,
        study_uid,
        outcomes,
        software_version=__version__,
        headers_cache=svc.headers,
    )
    return dataclasses.replace(plan, seconds=time.perf_counter() - t0)


def _node_reason(active: list[Analysis]) -> str:
    reasons = [f"{a.model_name}: {a.reason}" if a.model_name else a.reason for a in active]
    models = [a for a in active if a.model_name]
    lead = "no active model applies to this study" if models else ""
    return "; ".join(r for r in [lead, *reasons] if r) or "no active model on this node"


def _finding_of(svc: Services, analysis: Analysis) -> Any:
    try:
        return svc.model(analysis.model_name, analysis.model_version or None).finding
    except KeyError:
        return None


def finish(
    svc: Services,
    study_uid: str,
    generation: int,
    analyses: list[Analysis],
    plan: ReportPlan,
    timings: dict[str, float],
) -> Priority:
    """Record the run: results, priority, and the new revisions (released, or held when they
    would lower the priority already reported: a person acknowledges a downgrade)."""
    results = [a.result for a in analyses if a.result is not None]
    priority = study_priority([r for r in results if r.role != SHADOW])
    reasons = [
        f"{a.model_name}: {a.reason}" if a.model_name else a.reason
        for a in analyses
        if a.result is None and a.reason and a.role != SHADOW
    ]
    reason = "; ".join(reasons) if priority is Priority.NOT_ANALYSED else None
    current = svc.catalogue.finish_triage(
        study_uid,
        generation,
        results,
        priority,
        reason,
        timings,
        revisions=plan.revisions,
        current=plan.current,
        hold_downgrades=svc.settings.hold_downgrades,
    )
    if not current:
        log.info("study received new images during triage; it will be triaged again")
    return priority


def finish_shadow(svc: Services, study_uid: str, generation: int, analyses: list[Analysis]) -> None:
    """Record what the shadow models said, after the active result was recorded and sent:
    they never delay it. Refused, like any result, when the study moved on meanwhile."""
    results = [a.result for a in analyses if a.result is not None]
    if results and not svc.catalogue.record_shadow_results(study_uid, generation, results):
        log.info("study %s moved on before its shadow results were recorded", study_uid)
    timings = merge_timings(analyses)
    if timings:
        svc.catalogue.add_timings(study_uid, timings)


def run_study(svc: Services, study_uid: str, generation: int) -> Priority:
    """Every step in order, in this process and without Prefect: what the triage flow does,
    for notebooks, benchmarks and tests that call the library directly. Nothing is sent; the
    outbox holds what the node's delivery sends."""
    assignments = plan_study(svc, study_uid)
    analyses = [
        analyse(svc, study_uid, a) if a.model_name else Analysis("", None, a.reason)
        for a in assignments
        if a.role != SHADOW
    ]
    plan = report(svc, study_uid, analyses)
    timings = {**merge_timings(analyses), "report_s": plan.seconds}
    priority = finish(svc, study_uid, generation, analyses, plan, timings)
    shadow = [analyse(svc, study_uid, a) for a in assignments if a.role == SHADOW and a.model_name]
    finish_shadow(svc, study_uid, generation, shadow)
    return priority


def merge_timings(analyses: list[Analysis]) -> dict[str, float]:
    out: dict[str, float] = {}
    for a in analyses:
        for k, v in a.timings.items():
            out[k] = out.get(k, 0.0) + v
    return out
