"""The models page for ML engineers: each version's role, its evaluation with the ROC curve,
and its live scores (histogram, positive and uncertain rates, drift flagged) - what `triage
models list` and `show` print, for the browser."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from triage.modelops.drift import drift_rule_text, positive_rate_drifted
from triage.modelops.metrics import histogram
from triage.modelops.registry import ModelLifecycle
from triage.results import ModelState
from triage.worklist.presenting import histogram_svg, roc_svg

if TYPE_CHECKING:
    from triage.worklist.context import WebContext

LIVE_SCORES = 200


@dataclass(frozen=True)
class ModelView:
    name: str
    version: str
    state: str
    task: str
    threshold: float
    anchor: str
    auroc: str
    live_results: int
    live_positive: str
    live_ood: str
    drift: str
    evaluation: list[tuple[str, str]]
    roc_svg: str
    histogram_svg: str


def _num(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def model_views(context: WebContext) -> list[ModelView]:
    lifecycle = ModelLifecycle(
        context.catalogue, context.store, context.settings.home / "model-cache"
    )
    order: dict[str, int] = {ModelState.ACTIVE: 0, ModelState.SHADOW: 1, ModelState.REGISTERED: 2}
    views = []
    for v in sorted(lifecycle.versions(), key=lambda v: (v.name, order.get(v.state, 3))):
        rates = context.catalogue.live_rates(v.name, v.version)
        scores = lifecycle.recent_scores(v.name, v.version, LIVE_SCORES)
        evaluation = v.evaluation or {}
        evaluated_rate = evaluation.get("positive_rate")
        drift = ""
        if positive_rate_drifted(rates.positive_rate, rates.results, evaluated_rate):
            drift = (
                f"Drift: live positive rate {_num(rates.positive_rate)} against "
                f"{_num(evaluated_rate)} in the evaluation ({drift_rule_text()})"
            )
        facts = [
            ("studies", str(evaluation.get("studies", "-"))),
            (
                "positives / negatives",
                f"{evaluation.get('positives')} / {evaluation.get('negatives')}",
            ),  # fmt: skip
            ("AUROC", _num(evaluation.get("auroc"))),
            ("sensitivity", _num(evaluation.get("sensitivity"))),
            ("specificity", _num(evaluation.get("specificity"))),
            ("expected calibration error", _num(evaluation.get("ece"))),
            ("positive rate", _num(evaluated_rate)),
            ("uncertain rate", _num(evaluation.get("ood_rate"))),
        ]
        views.append(
            ModelView(
                name=v.name,
                version=v.version,
                state=v.state,
                task=v.task,
                threshold=v.threshold,
                anchor=re.sub(r"[^A-Za-z0-9_-]", "-", f"{v.name}-{v.version}"),
                auroc=_num(evaluation.get("auroc")),
                live_results=rates.results,
                live_positive=_num(rates.positive_rate),
                live_ood=_num(rates.ood_rate),
                drift=drift,
                evaluation=facts if v.evaluation else [],
                roc_svg=roc_svg(evaluation.get("scores", []), v.threshold),
                histogram_svg=histogram_svg(histogram(scores), v.threshold),
            )
        )
    return views
