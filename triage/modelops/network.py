"""A bundle's network: built from its ``network_def`` with MONAI's ConfigParser, weights loaded.

`load_network` is the loader a `triage.analysis.model.TriageModel` made from a bundle carries:
analysis runs the network without knowing how it was built. A bundle with only
``models/model.ts`` is loaded as TorchScript. Every failure is a ModelError that says what does
not fit (a config that does not build, weights of another network, a file that is not weights).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from triage.errors import ModelError

CONFIG_FILES = ("inference.json", "inference.yaml", "inference.yml")


def inference_config(folder: Path) -> Path | None:
    """configs/inference.json (or .yaml / .yml) of a bundle folder, if it has one."""
    return next(
        (folder / "configs" / n for n in CONFIG_FILES if (folder / "configs" / n).is_file()), None
    )


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
    config = inference_config(bundle)
    if config is None:
        raise ModelError(f"{bundle}/configs has no inference.json or inference.yaml")
    if not pt_path.is_file():
        raise ModelError(f"{pt_path} is missing: the bundle has no weights")
    parser = ConfigParser()
    try:
        parser.read_config(str(config))
        net = parser.get_parsed_content("network_def", instantiate=True)
    except Exception as exc:
        cause = f" ({_first_line(exc.__cause__)})" if exc.__cause__ is not None else ""
        raise ModelError(
            f"{config}: network_def cannot be built: {_first_line(exc)}{cause}"
        ) from exc
    if not isinstance(net, torch.nn.Module):
        raise ModelError(f"{config}: network_def builds a {type(net).__name__}, not a network")
    try:
        state = torch.load(pt_path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(
            f"{pt_path} cannot be read as PyTorch weights (torch.load: {_first_line(exc)})"
        ) from exc
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, Mapping):
        raise ModelError(f"{pt_path} holds a {type(state).__name__}, not a state_dict of weights")
    mismatch = _mismatch(net, state)
    try:
        net.load_state_dict(state)
    except Exception as exc:
        raise ModelError(
            f"{pt_path} does not fit the network in {config.name} "
            f"({type(net).__name__}): {mismatch or _first_line(exc)}"
        ) from exc
    return net.to(device).eval()


def _mismatch(net: torch.nn.Module, state: Mapping[str, Any]) -> str:
    """How a state_dict differs from the network's, in a line (torch lists every key)."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [
        k
        for k in own
        if k in state
        and hasattr(state[k], "shape")
        and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} weight(s) of the network are not in it (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} weight(s) fit no layer (e.g. {unexpected[0]})")
    if reshaped:
        k = reshaped[0]
        parts.append(
            f"{len(reshaped)} weight(s) have another shape (e.g. {k}: "
            f"{list(state[k].shape)} in the file, {list(own[k].shape)} in the network)"
        )
    if parts:
        parts.append("are these the weights of another network?")
    return "; ".join(parts)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]
