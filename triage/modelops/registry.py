"""Model versions and their lifecycle: register, activate, shadow, retire, roll back; the audit.

A registered version is an immutable bundle in the object store (``models/<name>/<hash>.zip``)
and a row in the catalogue. Its state is one of:

- ``registered``: stored, not running (a new version, or one replaced by another);
- ``active``: runs on every study it selects a series of; sets the priority, its SR goes to
  the PACS. At most one version of a model name is active;
- ``shadow``: runs on the same studies; its results are recorded, never change a priority
  and never reach the PACS;
- ``retired``: stored, not running, and never a rollback target.

Every registration and every change of state is a row of the audit trail (``model_changes``):
who, when, what and why. ``rollback`` re-activates the version that was active before the
current one, as the audit trail tells.

The values it hands out (`VersionInfo`, `Change`) and the states are in
`triage.modelops.versions`; unpacking a stored version into the local cache is in
`triage.modelops.cache`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import desc, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from triage.analysis.model import TriageModel
from triage.analysis.ood import Reference
from triage.catalogue import Catalogue, ModelChange, ModelVersion, Result, utcnow
from triage.errors import ModelError
from triage.modelops.bundle import Bundle, open_bundle, read_bundles
from triage.modelops.cache import cached_model
from triage.modelops.reference import registration_reference
from triage.modelops.versions import (
    ACTIVE,
    FIRST_START_BY,
    REGISTERED,
    RETIRED,
    SHADOW,
    STATES,
    Change,
    VersionInfo,
    audit_row,
    bundle_summary,
    change_info,
    require_who,
    version_info,
)
from triage.modelops.versions import running_names as running_names  # what callers import
from triage.store import ObjectStore

log = logging.getLogger(__name__)


class ModelLifecycle:
    """The registered versions of a node (catalogue + object store) and their changes."""

    def __init__(
        self,
        catalogue: Catalogue,
        store: ObjectStore,
        cache_dir: Path,
        device: torch.device | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.store = store
        self.cache_dir = Path(cache_dir)
        self.device = device or torch.device("cpu")

    # -- reading ----------------------------------------------------------------------------

    def versions(self, name: str | None = None) -> list[VersionInfo]:
        """Every registered version (of one model), by name then registration order."""
        with self.catalogue.session() as s:
            query = select(ModelVersion).order_by(ModelVersion.name, ModelVersion.id)
            if name is not None:
                query = query.where(ModelVersion.name == name)
            return [version_info(row) for row in s.scalars(query)]

    def running(self) -> list[VersionInfo]:
        """The active and shadow versions: what the pipeline runs."""
        return [v for v in self.versions() if v.state in (ACTIVE, SHADOW)]

    def changes(self, name: str | None = None, limit: int | None = None) -> list[Change]:
        """The audit trail (of one model), newest first."""
        with self.catalogue.session() as s:
            query = select(ModelChange).order_by(desc(ModelChange.id))
            if name is not None:
                query = query.where(ModelChange.model_name == name)
            if limit is not None:
                query = query.limit(limit)
            return [change_info(row) for row in s.scalars(query)]

    def revision(self) -> int:
        """A number that changes whenever the registry does (the newest audit row)."""
        with self.catalogue.session() as s:
            return int(s.scalar(select(func.max(ModelChange.id))) or 0)

    def is_empty(self) -> bool:
        with self.catalogue.session() as s:
            return s.scalar(select(func.count(ModelVersion.id))) == 0

    def find(self, name: str, version: str) -> VersionInfo:
        """A version by its full name (1.0.0+3fa2b1c9), its hash or hash prefix, or the bundle's
        version when only one registered version carries it."""
        known = self.versions(name)
        if not known:
            names = sorted({v.name for v in self.versions()})
            raise ModelError(
                f"no model named {name!r} is registered"
                + (f"; registered: {', '.join(names)}" if names else "")
            )
        exact = [v for v in known if v.version == version]
        if exact:
            return exact[0]
        text = version.strip().lower()
        matches = [
            v
            for v in known
            if (len(text) >= 4 and v.content_hash.startswith(text))
            or v.version.split("+")[0] == version
        ]
        if len(matches) == 1:
            return matches[0]
        listed = ", ".join(f"{v.version} ({v.state})" for v in known)
        if matches:
            raise ModelError(f"{version!r} matches several versions of {name}: {listed}")
        raise ModelError(f"{name} has no version {version!r}; its versions: {listed}")

    def recent_scores(self, name: str, version: str, limit: int = 50) -> list[float]:
        """The probabilities of the version's last ``limit`` results on live studies."""
        with self.catalogue.session() as s:
            rows = s.scalars(
                select(Result.probability)
                .where(Result.model_name == name, Result.model_version == version)
                .order_by(desc(Result.created_at))
                .limit(limit)
            )
            return [float(p) for p in rows]

    # -- registering ------------------------------------------------------------------------

    def register(
        self,
        source: Path,
        options: Path | None = None,
        *,
        by: str,
        reason: str = "",
        trial: str = "required",
        reference: Path | None = None,
    ) -> tuple[VersionInfo, bool]:
        """Register a bundle folder or zip with its options; (the version, whether it is new).

        ``trial``: "required" refuses a bundle whose trial run fails; "recorded" keeps the
        failure with the version (the shipped bundles at first start). Nothing is stored or
        catalogued unless every check passed; the same content registered again is the same
        version and is not stored twice.

        ``reference``: a folder of studies like those the model is meant for; their input
        statistics become the version's out-of-distribution reference. Without it the
        bundle's own ``reference.json`` is recorded, if it has one (`triage.modelops.reference`).
        """
        require_who(by)
        with open_bundle(Path(source), options) as bundle:
            known = self._get(bundle.name, bundle.version)
            if known is not None:
                return known, False
            trial_record = self._trial(bundle, trial)
            ood = registration_reference(bundle.model(), bundle.path, reference, self.device)
            archive = bundle.archive()
            key = f"models/{bundle.name}/{bundle.content_hash}.zip"
            existed = self.store.exists(key)
            self.store.put(key, archive)
            try:
                info = self._insert(bundle, key, trial_record, ood, by, reason)
            except IntegrityError:  # registered by another process at the same moment
                known = self._get(bundle.name, bundle.version)
                if known is None:
                    raise
                return known, False
            except BaseException:
                if not existed:
                    self.store.delete(key)
                raise
        log.info("registered model %s %s by %s", info.name, info.version, by)
        return info, True

    def _trial(self, bundle: Bundle, mode: str) -> dict[str, Any] | None:
        if mode == "skip":
            return None
        from triage.modelops.validation import trial_run

        try:
            return trial_run(bundle, self.device).as_dict()
        except ModelError as exc:
            if mode == "required":
                raise ModelError(f"{bundle.name} is not registered: {exc}") from None
            log.warning("model %s failed its trial run: %s", bundle.name, exc)
            return {"error": str(exc), "device": str(self.device)}

    def _insert(
        self,
        bundle: Bundle,
        key: str,
        trial: dict[str, Any] | None,
        reference: Reference | None,
        by: str,
        reason: str,
    ) -> VersionInfo:
        summary = bundle_summary(bundle)

        def work(s: Session) -> VersionInfo:
            row = ModelVersion(
                name=bundle.name,
                version=bundle.version,
                content_hash=bundle.content_hash,
                key=key,
                task=bundle.options.task,
                state=REGISTERED,
                options=bundle.options.canonical(),
                summary=json.dumps(summary, sort_keys=True),
                trial=json.dumps(trial, sort_keys=True) if trial is not None else None,
                evaluation=None,
                reference=(json.dumps(reference.as_dict(), sort_keys=True) if reference else None),
                registered_at=utcnow(),
                registered_by=by,
            )
            s.add(row)
            s.add(audit_row(by, "register", bundle.name, bundle.version, None, REGISTERED, reason))
            s.flush()
            return version_info(row)

        return self.catalogue.transaction(work)

    def register_shipped(self, models_dir: Path) -> list[VersionInfo]:
        """First start: register every bundle in ``models_dir`` and give each the role its
        options name ("first_start": active, the default; shadow; or registered).

        A shipped bundle whose trial run fails is still registered and activated, with the
        failure recorded: it then fails safe on each study (*not analysed*, with the reason on
        the worklist) instead of silently missing from the node.
        """
        if not Path(models_dir).is_dir():
            raise ModelError(f"TRIAGE_MODELS={str(models_dir)!r} is not a folder")
        done = []
        for bundle in read_bundles(models_dir):
            why = f"shipped in {models_dir}"
            info, new = self.register(bundle.path, by=FIRST_START_BY, reason=why, trial="recorded")
            role = bundle.options.first_start
            if new and role != REGISTERED:
                action = "activate" if role == ACTIVE else role
                info = self._change(info.name, info.version, role, action, FIRST_START_BY, why)
            done.append(info)
        return done

    def ensure_registered(self, models_dir: Path) -> list[VersionInfo]:
        """Register the shipped bundles when the registry is empty (the node's first start)."""
        if not self.is_empty():
            return []
        try:
            done = self.register_shipped(models_dir)
        except (ModelError, IntegrityError):
            if self.is_empty():
                raise
            # nodes sharing the catalogue started together: another one registered them
            log.info("first start: another node is registering the shipped models")
            return []
        if done:
            log.info(
                "first start: registered %s",
                ", ".join(f"{v.name} {v.version} ({v.state})" for v in done),
            )
        return done

    # -- changing state ---------------------------------------------------------------------

    def activate(self, name: str, version: str, *, by: str, reason: str = "") -> VersionInfo:
        """Make the version the active one of its model; the one active so far is replaced."""
        info = self.find(name, version)
        return self._change(name, info.version, ACTIVE, "activate", by, reason)

    def shadow(self, name: str, version: str, *, by: str, reason: str = "") -> VersionInfo:
        """Run the version in shadow mode: recorded next to the active one, never reported."""
        info = self.find(name, version)
        return self._change(name, info.version, SHADOW, SHADOW, by, reason)

    def retire(self, name: str, version: str, *, by: str, reason: str = "") -> VersionInfo:
        """Stop running the version for good (it stays stored; `activate` can bring it back)."""
        info = self.find(name, version)
        return self._change(name, info.version, RETIRED, "retire", by, reason)

    def rollback(self, name: str, *, by: str, reason: str = "") -> VersionInfo:
        """Re-activate the version that was active before the current one."""
        versions = {v.version: v for v in self.versions(name)}
        if not versions:
            self.find(name, "")  # raises: no such model
        current = next((v.version for v in versions.values() if v.state == ACTIVE), None)
        for change in self.changes(name):
            if change.to_state != ACTIVE or change.model_version == current:
                continue
            target = versions.get(change.model_version)
            if target is not None and target.state != RETIRED:
                return self._change(name, target.version, ACTIVE, "rollback", by, reason)
        raise ModelError(
            f"{name} has no earlier active version to roll back to (a retired one is not "
            "rolled back to; `triage models activate` names any version)"
        )

    def record_evaluation(
        self, name: str, version: str, evaluation: dict[str, Any], *, by: str
    ) -> VersionInfo:
        """Keep the evaluation with the version (the last one counts) and note it in the audit."""
        require_who(by)
        info = self.find(name, version)

        def work(s: Session) -> VersionInfo:
            row = self._row(s, name, info.version)
            row.evaluation = json.dumps(evaluation, sort_keys=True)
            note = (
                f"AUROC {evaluation.get('auroc')}, ECE {evaluation.get('ece')} on "
                f"{evaluation.get('dataset')} "
                f"({evaluation.get('studies')} studies)"
            )
            s.add(audit_row(by, "evaluate", name, info.version, row.state, row.state, note))
            return version_info(row)

        return self.catalogue.transaction(work)

    def _change(
        self, name: str, version: str, to_state: str, action: str, by: str, reason: str
    ) -> VersionInfo:
        require_who(by)
        if to_state not in STATES:
            raise ModelError(f"unknown state {to_state!r}: use one of {', '.join(STATES)}")

        def work(s: Session) -> VersionInfo:
            row = self._row(s, name, version)
            if row.state == to_state:
                raise ModelError(f"{name} {version} is already {to_state}")
            if to_state == ACTIVE:
                for other in s.scalars(
                    select(ModelVersion).where(
                        ModelVersion.name == name, ModelVersion.state == ACTIVE
                    )
                ):
                    other.state = REGISTERED
                    s.add(
                        audit_row(
                            by,
                            "replace",
                            name,
                            other.version,
                            ACTIVE,
                            REGISTERED,
                            f"replaced by {version} ({action})",
                        )
                    )
            s.add(audit_row(by, action, name, version, row.state, to_state, reason))
            row.state = to_state
            return version_info(row)

        info = self.catalogue.transaction(work)
        log.info("model %s %s is now %s (%s by %s)", name, version, to_state, action, by)
        return info

    def _row(self, s: Session, name: str, version: str) -> ModelVersion:
        row = s.scalar(
            select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version)
        )
        if row is None:
            raise ModelError(f"{name} {version} is not registered")
        return row

    def _get(self, name: str, version: str) -> VersionInfo | None:
        with self.catalogue.session() as s:
            row = s.scalar(
                select(ModelVersion).where(
                    ModelVersion.name == name, ModelVersion.version == version
                )
            )
            return version_info(row) if row is not None else None

    # -- loading ----------------------------------------------------------------------------

    def model(self, info: VersionInfo) -> TriageModel:
        """The version as the pipeline runs it, unpacked from the object store into the local
        cache once (and checked against its content hash)."""
        return cached_model(self.store, self.cache_dir, info)
