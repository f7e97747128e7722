"""Run a model on a volume: preprocessing on the device, the network, the probability."""

from __future__ import annotations

import re

import torch

from triage.errors import ModelError
from triage.registry import TriageModel

# PyTorch's CPU allocator reports running out of memory as a plain RuntimeError
_CPU_OUT_OF_MEMORY = re.compile(r"can't allocate memory: you tried to allocate (\d+) bytes")


def probability(model: TriageModel, x: torch.Tensor, device: torch.device) -> float:
    """The model's probability for its finding, given its preprocessed input on device."""
    network = model.network(device)
    try:
        with torch.inference_mode():
            out = network(x)
    except torch.OutOfMemoryError as exc:
        raise ModelError(f"model {model.name} ran out of memory on {device}") from exc
    except RuntimeError as exc:
        asked = _CPU_OUT_OF_MEMORY.search(str(exc))
        if asked:
            raise ModelError(
                f"model {model.name} ran out of memory on {device} (it asked for "
                f"{int(asked[1]) / 2**30:.1f} GiB at once)"
            ) from exc
        raise ModelError(f"model {model.name} failed on this input: {exc}") from exc
    out = out.float().reshape(out.shape[0], -1)
    if model.output_index >= out.shape[1]:
        raise ModelError(
            f"model {model.name} gave {out.shape[1]} output(s); triage.json asks for index "
            f"{model.output_index}"
        )
    if model.activation == "sigmoid":
        prob = torch.sigmoid(out[0, model.output_index])
    elif model.activation == "softmax":
        prob = torch.softmax(out[0], dim=0)[model.output_index]
    else:
        prob = out[0, model.output_index]
    value = float(prob.cpu())
    if not 0.0 <= value <= 1.0:
        raise ModelError(f"model {model.name} gave {value}, which is not a probability")
    return value
