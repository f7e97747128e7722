"""Triage of one complete study, as plain functions that the Prefect flow wraps.

plan -> analyse (assemble, preprocess, infer) per model -> report (SR into the store and the
outbox) -> finish (priority into the catalogue). Each failure that concerns one study becomes
*not analysed* with a reason; it never stops other studies.

Models in shadow mode (`triage.modelops.registry`) are planned and analysed like the active
ones, and
their results are recorded; they never set the priority, never write an SR and never make a
study *not analysed*.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, field

import pydicom
import torch

from triage import __version__
from triage.analysis.inference import score
from triage.analysis.preprocess import model_input_with_affine
from triage.analysis.priority import priority_for, study_priority
from triage.analysis.selection import select_series
from triage.app.services import Services
from triage.deliver.outbox import hl7_destination, sr_destination
from triage.errors import ModelError, NotAVolumeError, StorageError
from triage.imaging.volume import AssemblyOptions, assemble_volume
from triage.modelops.bundle import TriageModel
from triage.report.hl7 import oru_r01
from triage.report.sr import build_triage_sr, sr_uids
from triage.results import SHADOW, ModelResult, Priority

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Assignment:
    """Which series a model will run on, or why it will not run."""

    model_name: str
    series_instance_uid: str | None
    reason: str = ""
    model_version: str = ""
    role: str = "active"


@dataclass
class Analysis:
    model_name: str
    result: ModelResult | None
    reason: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    role: str = "active"


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
            )
        )
    return plan


def analyse(svc: Services, study_uid: str, assignment: Assignment) -> Analysis:
    """Assemble the series, run the model, turn its probability into a priority."""
    analysis = _analyse(svc, study_uid, assignment)
    analysis.role = assignment.role
    if assignment.role == SHADOW:
        if analysis.result is None and analysis.reason:
            # nothing else reports it: a shadow model never makes a study *not analysed*
            level = logging.INFO if assignment.series_instance_uid is None else logging.WARNING
            log.log(level, "shadow model %s: %s", assignment.model_name, analysis.reason)
        analysis.timings = {"shadow_s": sum(analysis.timings.values())}
    return analysis


def _analyse(svc: Services, study_uid: str, assignment: Assignment) -> Analysis:
    model = svc.model(assignment.model_name, assignment.model_version or None)
    if assignment.series_instance_uid is None:
        return Analysis(model.name, None, assignment.reason)
    series = next(
        (
            s
            for s in svc.catalogue.series_of(study_uid)
            if s.series_instance_uid == assignment.series_instance_uid
        ),
        None,
    )
    if series is None:
        return Analysis(model.name, None, "the selected series is no longer in the catalogue")
    try:
        t0 = time.perf_counter()
        options = AssemblyOptions(uneven_spacing=svc.settings.uneven_spacing)
        volume = assemble_volume(svc.store.get, series.keys, options)
        for warning in volume.warnings:
            log.info("series %s: %s", series.series_instance_uid, warning)
        t1 = time.perf_counter()
        x, affine = model_input_with_affine(
            volume.array, volume.affine_lps, model.input, svc.device
        )
        if svc.device.type == "cuda":
            torch.cuda.synchronize(svc.device)
        t2 = time.perf_counter()
        verdict = score(model, x, affine, svc.device)
        p = verdict.probability
        t3 = time.perf_counter()
    except NotAVolumeError as exc:
        label = series.series_number or series.series_description or "?"
        return Analysis(model.name, None, f"series {label} is not a volume: {exc}")
    except (ModelError, StorageError) as exc:
        return Analysis(model.name, None, str(exc))
    except MemoryError:
        return Analysis(model.name, None, f"out of memory while running {model.name}")
    timings = {"assemble_s": t1 - t0, "preprocess_s": t2 - t1, "infer_s": t3 - t2}
    result = ModelResult(
        model_name=model.name,
        model_version=model.version,
        finding=model.finding,
        probability=p,
        threshold=model.threshold,
        priority=priority_for(p, model.threshold, model.positive_priority),
        series_instance_uid=volume.series_instance_uid,
        role=assignment.role,
        lesion_volume_ml=verdict.lesion_volume_ml,
        lesion_centre_lps=verdict.lesion_centre_lps,
    )
    log.info(
        "model %s %s (%s): p=%.3f -> %s (%.2fs)",
        model.name,
        model.version,
        assignment.role,
        p,
        result.priority.value,
        t3 - t0,
    )
    return Analysis(model.name, result, "", timings)


def report(svc: Services, study_uid: str, results: list[ModelResult]) -> dict[tuple[str, str], str]:
    """Write one SR per analysed model into the store and queue it for the PACS.

    Returns the SR SOPInstanceUID per (model, version).
    """
    written: dict[tuple[str, str], str] = {}
    for result in results:
        if result.priority is Priority.NOT_ANALYSED or result.role == SHADOW:
            continue  # a shadow model's result never reaches the PACS
        series = next(
            s
            for s in svc.catalogue.series_of(study_uid)
            if s.series_instance_uid == result.series_instance_uid
        )
        headers = [
            pydicom.dcmread(io.BytesIO(svc.store.get(key)), stop_before_pixels=True)
            for key in series.keys
        ]
        sr = build_triage_sr(headers, [result], software_version=__version__)
        uids = sr_uids(
            study_uid, result.model_name, result.model_version, [result.series_instance_uid]
        )
        buffer = io.BytesIO()
        sr.save_as(buffer, enforce_file_format=True)
        key = f"results/{study_uid}/{uids.sop_instance_uid}.dcm"
        svc.store.put(key, buffer.getvalue())
        destination = sr_destination(svc.settings)
        if destination is not None:
            svc.catalogue.enqueue_delivery(study_uid, uids.sop_instance_uid, key, destination)
        hl7_to = hl7_destination(svc.settings)
        if hl7_to is not None:  # the priority where RIS worklists sort, beside the SR
            message = oru_r01(headers[0], result, sending_application=svc.settings.ae_title)
            hl7_key = f"results/{study_uid}/{uids.sop_instance_uid}.hl7"
            svc.store.put(hl7_key, message.encode("utf-8"))
            svc.catalogue.enqueue_delivery(study_uid, uids.sop_instance_uid, hl7_key, hl7_to)
        written[(result.model_name, result.model_version)] = uids.sop_instance_uid
    return written


def finish(
    svc: Services,
    study_uid: str,
    generation: int,
    analyses: list[Analysis],
    sr_written: dict[tuple[str, str], str],
    timings: dict[str, float],
) -> Priority:
    results = [a.result for a in analyses if a.result is not None]
    priority = study_priority([r for r in results if r.role != SHADOW])
    reasons = [
        f"{a.model_name}: {a.reason}" if a.model_name else a.reason
        for a in analyses
        if a.result is None and a.reason and a.role != SHADOW
    ]
    reason = "; ".join(reasons) if priority is Priority.NOT_ANALYSED else None
    current = svc.catalogue.finish_triage(
        study_uid, generation, results, priority, reason, sr_written, timings
    )
    if not current:
        log.info("study received new images during triage; it will be triaged again")
    return priority


def merge_timings(analyses: list[Analysis]) -> dict[str, float]:
    out: dict[str, float] = {}
    for a in analyses:
        for k, v in a.timings.items():
            out[k] = out.get(k, 0.0) + v
    return out
