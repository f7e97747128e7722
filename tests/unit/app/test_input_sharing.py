"""Two models with the same input section share one model input per series: the shipped
shadow segmenter reuses the active classifier's, instead of assembling and preprocessing the
series again after the active result went out; its result is the one it gets on its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.factories import phantom_ct_series, store_head_ct

from triage.analysis.input_cache import InputCache, input_key
from triage.app import pipeline
from triage.app.services import Services
from triage.config import load_settings
from triage.imaging.volume import AssemblyOptions
from triage.results import SHADOW


def _store(svc: Services, tag: str) -> str:
    return store_head_ct(svc, phantom_ct_series(tag, 5, (128, 128, 40), spacing=(1.8, 1.8, 2.5)))


def test_the_shadow_model_reuses_the_active_models_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = Services.open(load_settings({"TRIAGE_HOME": str(tmp_path), "TRIAGE_DEVICE": "cpu"}))
    try:
        roles = {m.name: m.role for m in svc.refresh_models()}
        assert SHADOW in roles.values() and len(roles) == 2, roles
        inputs = {m.input for m in svc.models}
        assert len(inputs) == 1, "the shipped models have one input section"
        assembled: list[int] = []
        real = pipeline.assemble_volume

        def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
            assembled.append(1)
            return real(*args, **kwargs)

        monkeypatch.setattr(pipeline, "assemble_volume", counted)
        study = _store(svc, "input-sharing")
        assignments = pipeline.plan_study(svc, study)
        analyses = [pipeline.analyse(svc, study, a) for a in assignments]
        assert len(assembled) == 1, "the series was assembled once for both models"
        assert all(a.result is not None for a in analyses), [a.reason for a in analyses]

        # each model alone, with nothing kept: the same probabilities
        for assignment, shared in zip(assignments, analyses, strict=True):
            svc.inputs = InputCache()
            alone = pipeline.analyse(svc, study, assignment)
            assert alone.result is not None and shared.result is not None
            assert alone.result.probability == pytest.approx(shared.result.probability, abs=1e-6)
            assert alone.result.ood_score == pytest.approx(shared.result.ood_score, abs=1e-6)
        assert len(assembled) == 3

        # a study re-opened by a new image is a new input
        svc.inputs = InputCache()
        pipeline.analyse(svc, study, assignments[0])
        series = svc.catalogue.series_of(study)[0]
        keys = list(series.keys)
        options = AssemblyOptions(uneven_spacing=svc.settings.uneven_spacing)
        model = svc.models[0]
        assert svc.inputs.get(input_key(keys, options, model.input, svc.device)) is not None
        assert svc.inputs.get(input_key(keys[:-1], options, model.input, svc.device)) is None
    finally:
        svc.close()
