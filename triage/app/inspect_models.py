"""`triage inspect`: which series each model of this node would choose, and why not the others.

The models are those the node would run: the active and shadow versions of its registry when
it has one, else the bundles in TRIAGE_MODELS (what it registers at its first start). Nothing is
loaded onto a device: only the options' series rules are read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from triage.analysis.selection import SeriesRule, explain_selection
from triage.catalogue import Catalogue, SeriesSummary
from triage.config import Settings
from triage.errors import TriageError
from triage.imaging.inspect import SeriesReport
from triage.modelops.bundle import read_bundle
from triage.modelops.options import OPTIONS_FILES, parse_options
from triage.modelops.registry import ModelLifecycle
from triage.store import open_store


@dataclass(frozen=True)
class InspectedModel:
    """A model version and its series rule (None, with ``error``, when its options fail)."""

    name: str
    version: str
    role: str  # active or shadow (registry); the options' first_start (TRIAGE_MODELS)
    rule: SeriesRule | None
    error: str = ""


@dataclass(frozen=True)
class SeriesVerdict:
    """One series as one model's rule judges it."""

    series_instance_uid: str
    series_number: str
    series_description: str
    chosen: bool
    qualifies: bool
    reason: str | None  # why it is not the one chosen; None for the chosen one

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ModelChoice:
    """The series a model would run on in these files, and why each other series was not."""

    model: InspectedModel
    chosen: SeriesVerdict | None
    reason: str  # why no series was chosen ("" when one was)
    series: list[SeriesVerdict] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.model.name,
            "version": self.model.version,
            "role": self.model.role,
            "error": self.model.error or None,
            "chosen_series_instance_uid": self.chosen.series_instance_uid if self.chosen else None,
            "reason": self.reason or None,
            "series": [v.as_dict() for v in self.series],
        }


def node_models(settings: Settings) -> tuple[str, list[InspectedModel]]:
    """Where the models come from (in words) and the models: the registry's running versions
    when the node has a registry, else the bundles in TRIAGE_MODELS."""
    note = ""
    try:
        registered = _registry_models(settings)
    except TriageError as exc:
        registered, note = None, f"the registry cannot be read ({exc}); "
    if registered is not None:
        return "the node's registry (active and shadow versions)", registered
    folder = settings.models
    if not folder.is_dir():
        return f"{note}no registry, and TRIAGE_MODELS={str(folder)!r} is not a folder", []
    return f"{note}TRIAGE_MODELS={str(folder)!r} (the node has no registry yet)", _bundle_models(
        folder
    )


def _registry_models(settings: Settings) -> list[InspectedModel] | None:
    """None when the node has no registry (no database yet, or no version registered)."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        path = url.database or ""
        if path in ("", ":memory:") or not Path(path).is_file():
            return None
    catalogue = Catalogue(settings.database_url)
    try:
        lifecycle = ModelLifecycle(
            catalogue, open_store(settings.store, settings.s3), settings.home / "model-cache"
        )
        if lifecycle.is_empty():
            return None
        out = []
        for info in lifecycle.running():
            try:
                rule = parse_options(info.options, f"{info.name} {info.version}").rule
                out.append(InspectedModel(info.name, info.version, info.state, rule))
            except TriageError as exc:
                out.append(InspectedModel(info.name, info.version, info.state, None, str(exc)))
        return out
    finally:
        catalogue.close()


def _bundle_models(folder: Path) -> list[InspectedModel]:
    bundles = sorted({p.parent for name in OPTIONS_FILES for p in folder.glob(f"*/{name}")})
    out = []
    for path in bundles:
        try:
            bundle = read_bundle(path)
        except TriageError as exc:
            out.append(InspectedModel(path.name, "", "", None, str(exc)))
            continue
        o = bundle.options
        out.append(InspectedModel(bundle.name, bundle.version, o.first_start, o.rule))
    return out


def model_choices(
    models: Sequence[InspectedModel],
    catalogued: Sequence[SeriesSummary],
    uncatalogued: Sequence[SeriesReport] = (),
) -> list[ModelChoice]:
    """Each model's choice among the series as the catalogue holds (or would hold) them;
    ``uncatalogued``: series whose every instance the receiver would refuse."""
    return [_choice(model, catalogued, uncatalogued) for model in models]


def _choice(
    model: InspectedModel,
    catalogued: Sequence[SeriesSummary],
    uncatalogued: Sequence[SeriesReport],
) -> ModelChoice:
    if model.rule is None:
        return ModelChoice(model, None, "the model's options cannot be read")
    selection = explain_selection(model.rule, catalogued)
    verdicts = [
        SeriesVerdict(
            c.series.series_instance_uid,
            c.series.series_number,
            c.series.series_description,
            c.chosen,
            c.qualifies,
            c.reason or None,
        )
        for c in selection.candidates
    ]
    for report in uncatalogued:
        why = report.refused[0] if report.refused else "no instance could be read"
        verdicts.append(
            SeriesVerdict(
                report.series_instance_uid,
                report.series_number,
                report.series_description,
                False,
                False,
                f"never catalogued: {why}",
            )
        )
    chosen = verdicts[0] if verdicts and verdicts[0].chosen else None
    return ModelChoice(model, chosen, selection.reason, verdicts)
