"""`triage models list` and `show` as terminal text (rich) and as JSON."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from triage.catalogue import LiveRates
from triage.modelops.drift import drift_rule_text, positive_rate_drifted
from triage.modelops.metrics import HISTOGRAM_EDGES, histogram
from triage.modelops.registry import Change, VersionInfo
from triage.results import ModelState

_STYLE: dict[str, str] = {
    ModelState.ACTIVE: "bold green",
    ModelState.SHADOW: "cyan",
    ModelState.REGISTERED: "",
    ModelState.RETIRED: "dim",
}


def versions_table(versions: Sequence[VersionInfo]) -> Table:
    table = Table(title="Registered models", box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("Model", "Version", "State", "Task", "Threshold", "Latency", "AUROC"):
        table.add_column(name, overflow="fold", min_width=5)
    for v in versions:
        table.add_row(
            v.name,
            v.version,
            Text(v.state, style=_STYLE.get(v.state, "")),
            v.task,
            f"{v.threshold:g}",
            latency_text(v.trial),
            _auroc_text(v.evaluation),
        )
    return table


def latency_text(trial: dict[str, Any] | None) -> str:
    if not trial:
        return "-"
    if "error" in trial:
        return "trial failed"
    return f"{trial['latency_s'] * 1000:.0f} ms ({trial['device']})"


def _auroc_text(evaluation: dict[str, Any] | None) -> str:
    if not evaluation or evaluation.get("auroc") is None:
        return "-"
    return f"{evaluation['auroc']:.3f} (n={evaluation['studies']})"


def show_lines(
    name: str,
    versions: Sequence[VersionInfo],
    live: dict[str, list[float]],
    changes: Sequence[Change],
    rates: dict[str, LiveRates] | None = None,
) -> list[str | Table]:
    """What `triage models show NAME` prints: versions, trial runs, evaluations, live scores
    and positive rate next to the evaluation's, and the audit trail."""
    out: list[str | Table] = [versions_table(versions)]
    for v in versions:
        out.append(f"\n[bold]{v.name} {v.version}[/] ({v.state}, {v.task})")
        summary = v.summary
        finding = summary.get("finding", {})
        out.append(
            f"  finding {finding.get('meaning')} ({finding.get('scheme')}:{finding.get('value')}), "
            f"threshold {v.threshold:g} -> {summary.get('positive_priority')}; series "
            f"{_series_text(summary.get('series', {}))}"
        )
        out.append(
            f"  registered {v.registered_at:%Y-%m-%d %H:%M:%S} by {v.registered_by}; content "
            f"hash {v.content_hash}"
        )
        out.append(f"  trial run: {_trial_text(v.trial)}")
        out.append(f"  {reference_text(v.reference)}")
        if v.evaluation:
            e = v.evaluation
            out.append(
                f"  evaluation on {e['dataset']} ({e['studies']} studies, {e['positives']}+ "
                f"{e['negatives']}-): AUROC {_num(e['auroc'])}, sensitivity "
                f"{_num(e['sensitivity'])}, specificity {_num(e['specificity'])} at "
                f"{e['threshold']:g}, positive rate {_num(e.get('positive_rate'))}, ECE "
                f"{_num(e.get('ece'))}; for sensitivity >= {e['target_sensitivity']:g} use "
                f"threshold {_num(e['suggested_threshold'], 6)}"
            )
        if rates and v.version in rates:
            out.append(f"  {live_rate_text(rates[v.version], v.evaluation)}")
        scores = live.get(v.version, [])
        if scores or v.evaluation:
            out.append(distribution_table(scores, v.evaluation, v.threshold))
    out.append("\n[bold]Changes[/] (newest first)")
    for c in changes:
        out.append(
            f"  {c.at:%Y-%m-%d %H:%M:%S} {c.who}: {c.action} {c.model_version} "
            f"({c.from_state or '-'} -> {c.to_state}){': ' + c.reason if c.reason else ''}"
        )
    return out


def live_rate_text(rates: LiveRates, evaluation: dict[str, Any] | None) -> str:
    """The live positive and OOD rates next to the evaluation's, drift flagged."""
    evaluated = (evaluation or {}).get("positive_rate")
    text = (
        f"live positive rate {_num(rates.positive_rate, 3)} (n={rates.results}) vs evaluation "
        f"{_num(evaluated, 3)}"
    )
    if positive_rate_drifted(rates.positive_rate, rates.results, evaluated):
        text += f" [bold red]DRIFT[/]: {drift_rule_text()}"
    text += (
        f"; live OOD rate {_num(rates.ood_rate, 3)} vs evaluation "
        f"{_num((evaluation or {}).get('ood_rate'), 3)}"
    )
    return text


def reference_text(reference: dict[str, Any] | None) -> str:
    """What the out-of-distribution check of a version is measured against."""
    if not reference:
        return (
            "input reference: [yellow]none[/]: inputs unlike the training data are not "
            "recognised (register with --reference DIR)"
        )
    return (
        f"input reference: {reference['studies']} studies ({reference['source']}), OOD "
        f"threshold {reference['threshold']:.2f}"
    )


def distribution_table(
    scores: Sequence[float], evaluation: dict[str, Any] | None, threshold: float
) -> Table:
    """Score histograms side by side: the last live studies and the evaluation set."""
    live = histogram(scores)
    evaluated = evaluation.get("histogram") if evaluation else None
    table = Table(box=box.SIMPLE, pad_edge=False, show_edge=False)
    table.add_column("score")
    table.add_column(f"live (last {len(scores)})", justify="right")
    if evaluated:
        table.add_column(f"evaluation ({sum(evaluated)})", justify="right")
    for i in range(len(live)):
        lo, hi = HISTOGRAM_EDGES[i], HISTOGRAM_EDGES[i + 1]
        mark = " <- threshold" if lo <= threshold < hi or (hi == 1.0 and threshold == 1.0) else ""
        cells = [f"{lo:.1f}-{hi:.1f}{mark}", _bar(live[i], max(live) or 1)]
        if evaluated:
            cells.append(_bar(evaluated[i], max(evaluated) or 1))
        table.add_row(*cells)
    flagged = sum(s >= threshold for s in scores)
    table.caption = f"live: {flagged}/{len(scores)} at or above the threshold"
    return table


def figure_text(evaluation: dict[str, Any], figure: str, digits: int = 4) -> str:
    """A figure of an evaluation, or why the set could not give it (older ones: just '-')."""
    value = evaluation.get(figure)
    if value is not None:
        return f"{value:.{digits}g}"
    why = (evaluation.get("undefined") or {}).get(figure)
    return f"not defined ({why})" if why else "-"


def calibration_text(evaluation: dict[str, Any]) -> str:
    """The one line of calibration: ECE, and what it means."""
    return (
        f"calibration: ECE {figure_text(evaluation, 'ece')} (expected calibration error over "
        f"{len(evaluation.get('reliability') or [])} probability bins; 0 is calibrated)"
    )


def reliability_table(evaluation: dict[str, Any]) -> Table:
    """The reliability curve as rows: a calibrated model's two means agree in every bin."""
    table = Table(title="Reliability curve", box=box.SIMPLE, pad_edge=False, show_edge=False)
    for name in ("probability", "studies", "mean probability", "positive fraction"):
        table.add_column(name, justify="left" if name == "probability" else "right")
    for b in evaluation.get("reliability") or []:
        table.add_row(
            f"{b['low']:.1f}-{b['high']:.1f}",
            str(b["count"]),
            _num(b["mean_probability"], 3),
            _num(b["positive_fraction"], 3),
        )
    return table


def _bar(count: int, most: int) -> str:
    return f"{'#' * round(12 * count / most) if count else ''} {count}"


def _series_text(series: dict[str, Any]) -> str:
    parts = [
        "/".join(series.get("modality") or []) or "any modality",
        "/".join(series.get("body_part") or []) or "any body part",
        f">= {series.get('min_slices')} images",
    ]
    return ", ".join(parts)


def _trial_text(trial: dict[str, Any] | None) -> str:
    if not trial:
        return "not run"
    if "error" in trial:
        return f"FAILED on {trial.get('device')}: {trial['error']}"
    memory = trial.get("peak_memory_bytes")
    memory_text = (
        f"{memory / 2**20:.1f} MiB ({trial['memory_measure']})" if memory is not None else "-"
    )
    return (
        f"{trial['latency_s'] * 1000:.0f} ms per input on {trial['device']} (first run "
        f"{trial['first_run_s'] * 1000:.0f} ms), peak memory {memory_text}, input "
        f"{trial['input_shape']} -> output {trial['output_shape']}, "
        f"{trial['parameters']:,} parameters"
    )


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def show_json(
    name: str,
    versions: Sequence[VersionInfo],
    live: dict[str, list[float]],
    changes: Sequence[Change],
    rates: dict[str, LiveRates] | None = None,
) -> dict[str, Any]:
    return {
        "name": name,
        "versions": [
            {
                **v.as_dict(),
                "live": {
                    "scores": live.get(v.version, []),
                    "histogram": histogram(live.get(v.version, [])),
                    **_rates_json((rates or {}).get(v.version), v.evaluation),
                },
            }
            for v in versions
        ],
        "changes": [c.as_dict() for c in changes],
    }


def _rates_json(rates: LiveRates | None, evaluation: dict[str, Any] | None) -> dict[str, Any]:
    if rates is None:
        return {}
    evaluated = (evaluation or {}).get("positive_rate")
    return {
        **dataclasses.asdict(rates),
        "evaluation_positive_rate": evaluated,
        "positive_rate_drift": positive_rate_drifted(rates.positive_rate, rates.results, evaluated),
    }
