"""The node's long-lived services, built once from the settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from triage.catalogue import Catalogue
from triage.config import Settings
from triage.preprocess import select_device
from triage.registry import TriageModel, discover_models
from triage.store import ObjectStore, open_store

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    store: ObjectStore
    catalogue: Catalogue
    models: list[TriageModel] = field(default_factory=list)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def open(cls, settings: Settings) -> Services:
        settings.home.mkdir(parents=True, exist_ok=True)
        store = open_store(settings.store)
        catalogue = Catalogue(settings.database_url)
        models = discover_models(settings.models)
        device = select_device(settings.device)
        log.info(
            "%d model(s) on %s: %s",
            len(models),
            device,
            ", ".join(f"{m.name} {m.version}" for m in models) or "none",
        )
        return cls(settings, store, catalogue, models, device)

    def model(self, name: str) -> TriageModel:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    def close(self) -> None:
        self.catalogue.close()
