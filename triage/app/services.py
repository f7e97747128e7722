"""The node's long-lived services, built once from the settings, and the one place a Prefect
flow gets them from (`node_services`)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from triage.analysis.inference import amp_dtype
from triage.analysis.input_cache import InputCache
from triage.analysis.model import TriageModel
from triage.analysis.preprocess import select_device
from triage.catalogue import Catalogue
from triage.config import Settings
from triage.modelops.registry import ModelLifecycle, running_names
from triage.report.header_cache import HeaderCache
from triage.store import ObjectStore, open_store

if TYPE_CHECKING:
    from triage.receive.pull import Puller

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    store: ObjectStore
    catalogue: Catalogue
    models: list[TriageModel] = field(default_factory=list)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    lifecycle: ModelLifecycle | None = None
    #: pull mode: the node's puller (its receiver, and its hook for studies known complete)
    puller: Puller | None = None
    #: the headers of the series just analysed, for the documents written next
    headers: HeaderCache = field(default_factory=HeaderCache, repr=False)
    #: the model inputs made from the series just analysed, for the next model with that input
    inputs: InputCache = field(default_factory=InputCache, repr=False)
    #: the reduced precision the networks run in (TRIAGE_AMP, CUDA only); None: float32
    amp: torch.dtype | None = None
    # every version loaded so far, by (name, version): their networks stay loaded across
    # registry changes (an activation, a rollback)
    _loaded: dict[tuple[str, str], TriageModel] = field(default_factory=dict, repr=False)
    _revision: int = field(default=-1, repr=False)

    @classmethod
    def open(cls, settings: Settings, *, models: bool = True) -> Services:
        """Open the store, the catalogue and (unless ``models`` is False, for commands that
        run no model) the model registry, loading the running versions on the device."""
        settings.home.mkdir(parents=True, exist_ok=True)
        store = open_store(settings.store, settings.s3)
        catalogue = Catalogue(settings.database_url)
        if not models:
            return cls(settings, store, catalogue)
        device = select_device(settings.device)
        lifecycle = open_lifecycle(settings, catalogue, store, device)
        amp = amp_dtype(settings.amp, device)
        svc = cls(settings, store, catalogue, [], device, lifecycle, amp=amp)
        svc.refresh_models()
        running = running_names(lifecycle.running())
        on = f"{device} ({settings.amp} autocast)" if svc.amp is not None else str(device)
        log.info("%d model(s) on %s: %s", len(svc.models), on, running)
        return svc

    def refresh_models(self) -> list[TriageModel]:
        """The active and shadow models now, as the registry says (re-read when it changed:
        `triage models activate`, `rollback`... take effect from the next study)."""
        if self.lifecycle is None:
            return self.models
        revision = self.lifecycle.revision()
        if revision == self._revision:
            return self.models
        models = []
        for info in self.lifecycle.running():
            key = (info.name, info.version)
            if key not in self._loaded:
                self._loaded[key] = self.lifecycle.model(info)
            models.append(self._loaded[key].with_role(info.state))
        self.models, self._revision = models, revision
        return models

    def model(self, name: str, version: str | None = None) -> TriageModel:
        for m in self.models:
            if m.name == name and (version is None or m.version == version):
                return m
        if version is not None and (name, version) in self._loaded:
            return self._loaded[(name, version)]  # changed since the study was planned
        raise KeyError(name)

    def close(self) -> None:
        self.catalogue.close()


def open_lifecycle(
    settings: Settings, catalogue: Catalogue, store: ObjectStore, device: torch.device
) -> ModelLifecycle:
    """The model registry of this node; at its first start (an empty registry) the bundles in
    TRIAGE_MODELS are registered, each active unless its options say otherwise."""
    lifecycle = ModelLifecycle(catalogue, store, settings.home / "model-cache", device)
    lifecycle.ensure_registered(settings.models)
    return lifecycle


_process_services: Services | None = None
_process_lock = threading.Lock()


def node_services() -> Services:
    """The services of this process, for the Prefect flows: those of the node that runs here
    (`triage.app.node.start_node` makes them the process's), else - in a Prefect worker process
    that runs flows for a node elsewhere - opened once from the TRIAGE_* environment."""
    global _process_services
    with _process_lock:
        if _process_services is None:
            from triage.config import load_settings

            _process_services = Services.open(load_settings())
        return _process_services


def serve_in_this_process(svc: Services | None) -> None:
    """Make ``svc`` the services `node_services` returns in this process (None: none yet).
    Only the node's wiring (`start_node`, the commands) calls this."""
    global _process_services
    with _process_lock:
        _process_services = svc
