"""`triage models ...`: the model registry for ML engineers.

register a MONAI bundle (folder or zip) with its triage options; list and show versions;
activate, shadow, retire, roll back; evaluate on a labelled set. Each change is recorded in the
audit trail with who (--by, default: the login name), when and why (--reason).
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from triage.config import load_settings
from triage.results import ModelState

if TYPE_CHECKING:
    from triage.modelops.registry import ModelLifecycle, VersionInfo

models_app = typer.Typer(
    help="Model registry: register MONAI bundles, run them in shadow, promote, roll back, "
    "evaluate.",
    no_args_is_help=True,
)
console = Console()


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


By = Annotated[str, typer.Option("--by", help="Who makes the change (for the audit trail).")]
Reason = Annotated[str, typer.Option("--reason", "-m", help="Why (for the audit trail).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _lifecycle() -> ModelLifecycle:
    from triage.analysis.preprocess import select_device
    from triage.app.runtime import configure_logging
    from triage.app.services import open_lifecycle
    from triage.catalogue import Catalogue
    from triage.store import open_store

    settings = load_settings()
    # the registry's own messages are what these commands print; its log only when asked for
    configure_logging(settings.log_level if "TRIAGE_LOG_LEVEL" in os.environ else "WARNING")
    settings.home.mkdir(parents=True, exist_ok=True)
    catalogue = Catalogue(settings.database_url)
    store = open_store(settings.store, settings.s3)
    return open_lifecycle(settings, catalogue, store, select_device(settings.device))


def _done(info: VersionInfo, what: str) -> None:
    console.print(f"{info.name} {info.version} is now [bold]{info.state}[/] ({what})")


@models_app.command("register")
def register(
    path: Annotated[Path, typer.Argument(help="A MONAI bundle folder or a zip of one.")],
    options: Annotated[
        Path | None,
        typer.Option(help="The triage options file (JSON or YAML); default: triage.json beside."),
    ] = None,
    by: By = "",
    reason: Reason = "",
    reference: Annotated[
        Path | None,
        typer.Option(
            help="A folder of studies (one folder each) like those the model is meant for: "
            "their input statistics are the version's out-of-distribution reference. "
            "Default: the bundle's reference.json; without either the model runs unchecked."
        ),
    ] = None,
) -> None:
    """Check a bundle (load it, run it once on the device), then store it as a new version."""
    from triage.app.models_view import latency_text, reference_text

    lifecycle = _lifecycle()
    info, new = lifecycle.register(
        path, options, by=by or _who(), reason=reason, reference=reference
    )
    if not new:
        console.print(
            f"already registered: {info.name} {info.version} ({info.state}); the same content "
            "is always the same version"
        )
        return
    trial = info.trial or {}
    memory = trial.get("peak_memory_bytes")
    console.print(
        f"registered {info.name} {info.version} ({info.task}); trial run on {trial.get('device')}: "
        f"{latency_text(info.trial)}, peak memory "
        f"{'-' if memory is None else f'{memory / 2**20:.1f} MiB'}, output "
        f"{trial.get('output_shape')}"
    )
    console.print(reference_text(info.reference))
    console.print(
        f"next: `triage models shadow {info.name} {info.version}` to try it on live studies, "
        f"or `triage models activate {info.name} {info.version}`"
    )


@models_app.command("list")
def list_versions(as_json: AsJson = False) -> None:
    """Every registered version with its state, latency and last evaluation."""
    from triage.app.models_view import versions_table

    versions = _lifecycle().versions()
    if as_json:
        sys.stdout.write(json.dumps([v.as_dict() for v in versions], indent=2) + "\n")
        return
    console.print(versions_table(versions))


@models_app.command("show")
def show(
    name: str,
    last: Annotated[int, typer.Option(help="Live scores of the last N studies.")] = 50,
    as_json: AsJson = False,
) -> None:
    """A model's versions, trial runs, evaluations, live score distribution and positive rate
    (flagged when far above the evaluation's), and changes."""
    from triage.app.models_view import show_json, show_lines

    lifecycle = _lifecycle()
    versions = lifecycle.versions(name)
    if not versions:
        lifecycle.find(name, "")  # raises, naming the registered models
    live = {v.version: lifecycle.recent_scores(name, v.version, last) for v in versions}
    rates = {v.version: lifecycle.catalogue.live_rates(name, v.version) for v in versions}
    changes = lifecycle.changes(name, limit=30)
    if as_json:
        shown = show_json(name, versions, live, changes, rates)
        sys.stdout.write(json.dumps(shown, indent=2) + "\n")
        return
    for line in show_lines(name, versions, live, changes, rates):
        console.print(line, highlight=False)


@models_app.command("activate")
def activate(name: str, version: str, by: By = "", reason: Reason = "") -> None:
    """Make a version the active one: it sets priorities and its SR goes to the PACS."""
    _done(_lifecycle().activate(name, version, by=by or _who(), reason=reason), "activated")


@models_app.command("shadow")
def shadow(name: str, version: str, by: By = "", reason: Reason = "") -> None:
    """Run a version in shadow mode: recorded on live studies, never reported."""
    _done(_lifecycle().shadow(name, version, by=by or _who(), reason=reason), "shadow mode")


@models_app.command("retire")
def retire(name: str, version: str, by: By = "", reason: Reason = "") -> None:
    """Stop running a version for good (it stays stored)."""
    lifecycle = _lifecycle()
    info = lifecycle.retire(name, version, by=by or _who(), reason=reason)
    _done(info, ModelState.RETIRED)
    if not any(v.state == ModelState.ACTIVE for v in lifecycle.versions(name)):
        console.print(f"[yellow]warning:[/] {name} has no active version now")


@models_app.command("rollback")
def rollback(name: str, by: By = "", reason: Reason = "") -> None:
    """Re-activate the version that was active before the current one."""
    _done(_lifecycle().rollback(name, by=by or _who(), reason=reason), "rolled back")


@models_app.command("evaluate")
def evaluate(
    name: str,
    version: str,
    dataset: Annotated[Path, typer.Argument(help="Folder of study folders and labels.csv.")],
    labels: Annotated[
        Path | None, typer.Option(help="CSV study,label (default: labels.csv).")
    ] = None,
    target_sensitivity: Annotated[
        float, typer.Option(help="Suggest the threshold that reaches this sensitivity.")
    ] = 0.9,
    roc: Annotated[Path | None, typer.Option(help="Where to write the ROC curve (PNG).")] = None,
    by: By = "",
    as_json: AsJson = False,
) -> None:
    """AUROC, sensitivity, specificity and positive rate at the threshold, a suggested
    threshold, calibration (ECE, reliability curve), ROC PNG."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from triage.app.models_view import calibration_text, figure_text, reliability_table
    from triage.imaging.volume import AssemblyOptions
    from triage.modelops.evaluation import evaluate as run
    from triage.modelops.evaluation import read_labels

    lifecycle = _lifecycle()
    info = lifecycle.find(name, version)
    model = lifecycle.model(info)
    settings = load_settings()
    total = len(read_labels(dataset, labels))
    png = roc or Path(f"roc-{info.name}-{info.content_hash[:8]}.png")
    columns = (TextColumn("scoring studies"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task("scoring", total=total)
        result = run(
            model,
            dataset,
            device=lifecycle.device,
            labels=labels,
            target_sensitivity=target_sensitivity,
            roc_png=png,
            options=AssemblyOptions(uneven_spacing=settings.uneven_spacing),
            progress=lambda _study: progress.advance(task),
        )
    evaluated = result.as_dict()
    lifecycle.record_evaluation(info.name, info.version, evaluated, by=by or _who())
    if as_json:
        sys.stdout.write(json.dumps(evaluated, indent=2) + "\n")
        return
    console.print(
        f"{info.name} {info.version} on {dataset}: {result.studies} studies "
        f"({result.positives} positive, {result.negatives} negative scored, "
        f"{len(result.not_analysed)} not analysed)"
    )
    console.print(
        f"AUROC {figure_text(evaluated, 'auroc')}; at threshold {result.threshold:g}: "
        f"sensitivity {figure_text(evaluated, 'sensitivity')}, specificity "
        f"{figure_text(evaluated, 'specificity')}, positive rate "
        f"{figure_text(evaluated, 'positive_rate')}"
    )
    console.print(
        f"out of distribution (input unlike the training data): rate {result.ood_rate:g} "
        f"at OOD threshold {result.ood_threshold:.2f}"
        if result.ood_rate is not None and result.ood_threshold is not None
        else "out of distribution: not checked (the version has no input reference)"
    )
    if result.suggested_threshold is None:
        console.print(
            f"for sensitivity >= {target_sensitivity:g}: no threshold to suggest "
            f"({result.undefined.get('suggested_threshold', 'no positive study scored')})"
        )
    else:
        console.print(
            f"for sensitivity >= {target_sensitivity:g}: threshold "
            f"{result.suggested_threshold} (sensitivity {result.suggested_sensitivity}, "
            f"specificity {result.suggested_specificity}); the threshold is part of the "
            "options: register the bundle again with it to make a new version"
        )
    console.print(calibration_text(evaluated))
    console.print(reliability_table(evaluated))
    for item in result.not_analysed:
        console.print(f"  not analysed: {item['study']}: {item['reason']}")
    console.print(f"ROC curve: {result.roc_png or 'not written (needs both labels)'}")
