"""What the registry keeps of a model version and of each change: the values and their rows.

`VersionInfo` (one registered version) and `Change` (one row of the audit trail) are what the
registry (`triage.modelops.registry`), the CLI and the views work with; this module turns the
catalogue's rows into them, makes audit rows, and says what a version's summary holds. The
states a version can be in are named here once.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from triage.catalogue import ModelChange, ModelVersion, utcnow
from triage.errors import ModelError
from triage.modelops.bundle import Bundle
from triage.results import ModelState

REGISTERED = ModelState.REGISTERED
ACTIVE = ModelState.ACTIVE
SHADOW = ModelState.SHADOW
RETIRED = ModelState.RETIRED
STATES = tuple(ModelState)
#: who the audit names for what the node does by itself at its first start
FIRST_START_BY = "triage (first start)"


@dataclass(frozen=True)
class VersionInfo:
    """One registered model version, as the catalogue keeps it."""

    name: str
    version: str
    content_hash: str
    key: str
    task: str
    state: str
    options: dict[str, Any]
    summary: dict[str, Any]
    trial: dict[str, Any] | None
    evaluation: dict[str, Any] | None
    registered_at: datetime
    registered_by: str
    #: the statistics of the inputs it is meant for (`triage.analysis.ood.Reference.as_dict`);
    #: None: it runs without the out-of-distribution check
    reference: dict[str, Any] | None = None

    @property
    def threshold(self) -> float:
        return float(self.options["threshold"])

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["registered_at"] = self.registered_at.isoformat() + "Z"
        return out


@dataclass(frozen=True)
class Change:
    """One row of the audit trail."""

    at: datetime
    who: str
    action: str
    model_name: str
    model_version: str
    from_state: str | None
    to_state: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["at"] = self.at.isoformat() + "Z"
        return out


def require_who(by: str) -> None:
    """Every change names who made it: the audit trail records it."""
    if not by or not by.strip():
        raise ModelError("say who makes the change (--by NAME): the audit trail records it")


def audit_row(
    who: str,
    action: str,
    name: str,
    version: str,
    from_state: str | None,
    to_state: str,
    reason: str,
) -> ModelChange:
    """One row of the audit trail, stamped now."""
    return ModelChange(
        at=utcnow(),
        who=who.strip()[:128],
        action=action,
        model_name=name,
        model_version=version,
        from_state=from_state,
        to_state=to_state,
        reason=reason or "",
    )


def bundle_summary(bundle: Bundle) -> dict[str, Any]:
    """What `triage models show` says of a version without unpacking it: kept with its row."""
    meta = bundle.metadata
    o = bundle.options
    return {
        "bundle_version": bundle.metadata_version,
        "bundle_name": str(meta.get("name", "")),
        "description": str(meta.get("description", ""))[:500],
        "monai_version": str(meta.get("monai_version", "")),
        "finding": {
            "value": o.finding.value,
            "scheme": o.finding.scheme_designator,
            "meaning": o.finding.meaning,
        },
        "threshold": o.threshold,
        "positive_priority": o.positive_priority.value,
        "series": {
            "modality": list(o.rule.modality),
            "body_part": [p.text for p in o.rule.body_part],
            "min_slices": o.rule.min_slices,
        },
        "input": o.input.as_dict(),
        "files": list(bundle.files),
    }


def version_info(row: ModelVersion) -> VersionInfo:
    """A catalogue row of a version as the value the registry hands out."""
    return VersionInfo(
        name=row.name,
        version=row.version,
        content_hash=row.content_hash,
        key=row.key,
        task=row.task,
        state=row.state,
        options=json.loads(row.options),
        summary=json.loads(row.summary),
        trial=json.loads(row.trial) if row.trial else None,
        evaluation=json.loads(row.evaluation) if row.evaluation else None,
        registered_at=row.registered_at,
        registered_by=row.registered_by,
        reference=json.loads(row.reference) if row.reference else None,
    )


def change_info(row: ModelChange) -> Change:
    """A catalogue row of the audit trail as the value the registry hands out."""
    return Change(
        at=row.at,
        who=row.who,
        action=row.action,
        model_name=row.model_name,
        model_version=row.model_version,
        from_state=row.from_state,
        to_state=row.to_state,
        reason=row.reason,
    )


def running_names(versions: Sequence[VersionInfo]) -> str:
    """The versions in one line for the log, e.g. "ich_classifier 1.0.0+3fa2b1c9 (active)"."""
    return ", ".join(f"{v.name} {v.version} ({v.state})" for v in versions) or "none"
