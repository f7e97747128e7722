"""Model registry: the MONAI bundles this node runs, read with MONAI's own bundle tools.

A bundle is a folder in the MONAI bundle layout (``configs/metadata.json``,
``configs/inference.json``, ``models/model.pt`` or ``models/model.ts``) plus a ``triage.json``
beside it: which series it runs on, its input, how its output becomes a probability, the finding
it reports, its operating threshold and the priority of a positive result. Every folder under
``TRIAGE_MODELS`` that holds a ``triage.json`` is an active model.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydicom.sr.coding import Code

from triage.errors import ModelError
from triage.preprocess import InputSpec
from triage.results import Priority
from triage.selection import SeriesRule

log = logging.getLogger(__name__)

OPTIONS_FILE = "triage.json"


@dataclass
class TriageModel:
    name: str
    version: str
    path: Path
    rule: SeriesRule
    input: InputSpec
    activation: str
    output_index: int
    finding: Code
    threshold: float
    positive_priority: Priority
    _networks: dict[str, torch.nn.Module] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def network(self, device: torch.device) -> torch.nn.Module:
        """The network with its weights, on device, in eval mode (loaded once per device)."""
        with self._lock:
            if str(device) not in self._networks:
                self._networks[str(device)] = load_network(self.path, device)
            return self._networks[str(device)]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path} is missing") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} must hold a JSON object")
    return data


def read_options(bundle: Path, metadata: Mapping[str, Any]) -> TriageModel:
    path = bundle / OPTIONS_FILE
    opts = _read_json(path)
    try:
        finding = opts["finding"]
        code = Code(str(finding["value"]), str(finding["scheme"]), str(finding["meaning"]))
        threshold = float(opts["threshold"])
        output = opts.get("output", {})
        activation = str(output.get("activation", "sigmoid"))
        if activation not in ("sigmoid", "softmax", "none"):
            raise ModelError(f"{path}: output.activation must be sigmoid, softmax or none")
        positive = Priority(opts.get("positive_priority", "urgent"))
        rule = SeriesRule.from_dict(opts.get("series", {}))
        spec = InputSpec.from_dict(opts["input"])
    except KeyError as exc:
        raise ModelError(f"{path}: required key {exc} is missing") from None
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{path}: {exc}") from None
    if not 0.0 <= threshold <= 1.0:
        raise ModelError(f"{path}: threshold {threshold} must lie between 0 and 1")
    if opts.get("task", "classification") != "classification":
        raise ModelError(f"{path}: only classification bundles are supported in this version")
    return TriageModel(
        name=str(opts.get("name", bundle.name)),
        version=str(metadata.get("version", "0")),
        path=bundle,
        rule=rule,
        input=spec,
        activation=activation,
        output_index=int(output.get("index", 0)),
        finding=code,
        threshold=threshold,
        positive_priority=positive,
    )


def load_bundle(bundle: Path) -> TriageModel:
    """Read a bundle's metadata and triage options (weights are loaded on first use)."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise ModelError(f"{bundle} is not a bundle folder")
    metadata = _read_json(bundle / "configs" / "metadata.json")
    return read_options(bundle, metadata)


def load_network(bundle: Path, device: torch.device) -> torch.nn.Module:
    """Instantiate ``network_def`` from the bundle config and load its weights."""
    from monai.bundle import ConfigParser

    ts_path = bundle / "models" / "model.ts"
    pt_path = bundle / "models" / "model.pt"
    if ts_path.is_file() and not pt_path.is_file():
        try:
            net: torch.nn.Module = torch.jit.load(str(ts_path), map_location=device)
        except Exception as exc:
            raise ModelError(f"{ts_path} is not a loadable TorchScript model: {exc}") from exc
        return net.eval()
    config = next(
        (
            bundle / "configs" / n
            for n in ("inference.json", "inference.yaml")
            if (bundle / "configs" / n).is_file()
        ),
        None,
    )
    if config is None:
        raise ModelError(f"{bundle}/configs has no inference.json or inference.yaml")
    if not pt_path.is_file():
        raise ModelError(f"{pt_path} is missing: the bundle has no weights")
    parser = ConfigParser()
    try:
        parser.read_config(str(config))
        net = parser.get_parsed_content("network_def", instantiate=True)
    except Exception as exc:
        raise ModelError(f"{config}: network_def cannot be built: {exc}") from exc
    try:
        state = torch.load(pt_path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(
            f"{pt_path} cannot be read as PyTorch weights ({exc}); save them with "
            "torch.save(network.state_dict(), ...)"
        ) from exc
    try:
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        net.load_state_dict(state)
    except Exception as exc:
        raise ModelError(f"{pt_path} does not fit the network in {config.name}: {exc}") from exc
    return net.to(device).eval()


def discover_models(models_dir: Path) -> list[TriageModel]:
    """Every bundle under models_dir that carries a triage.json, sorted by name."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise ModelError(f"TRIAGE_MODELS={str(models_dir)!r} is not a folder")
    found = [load_bundle(p.parent) for p in sorted(models_dir.glob(f"*/{OPTIONS_FILE}"))]
    names = [m.name for m in found]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ModelError(f"two bundles in {models_dir} share the name(s) {', '.join(dupes)}")
    return found
