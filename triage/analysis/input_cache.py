"""The model inputs made from the series just analysed, for the next model with the same input.

Assembling a thin-slice series and preprocessing it are most of a model's time on the CPU
(about 1.3 s and 1.9 s for 200 slices of 512 x 512 on a 2-core machine), and two models with
the same input section (voxel size, array size, window) get the same input from the same
series. The shipped shadow segmenter has the active classifier's input: without this it
assembled and preprocessed the series a second time after the active result was sent, which
held the worker from the next study. Bounded: the last few inputs (about 1 MB each for the
shipped models).

An input is found only for the very same instances of the series (their store keys), the
same assembly options, the same input section and the same device: a study re-opened by new
images gets a new input.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from triage.analysis.preprocess import InputSpec

DEFAULT_CAPACITY = 4


@dataclass(frozen=True)
class ModelInput:
    """One series made into one model input: the tensor (1, 1, X, Y, Z) on its device (read
    only: scoring and the key point never change it) and the affine from its voxel indices to
    LPS mm."""

    x: torch.Tensor
    affine_lps: np.ndarray
    series_instance_uid: str


def input_key(
    keys: Sequence[str], options: Hashable, spec: InputSpec, device: torch.device
) -> tuple[Hashable, ...]:
    """What makes two inputs the same: the instances, the assembly options, the input section
    and the device."""
    return (tuple(sorted(keys)), options, spec, str(device))


class InputCache:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._inputs: OrderedDict[tuple[Hashable, ...], ModelInput] = OrderedDict()
        self._lock = threading.Lock()

    def keep(self, key: tuple[Hashable, ...], made: ModelInput) -> None:
        with self._lock:
            self._inputs[key] = made
            self._inputs.move_to_end(key)
            while len(self._inputs) > self.capacity:
                self._inputs.popitem(last=False)

    def get(self, key: tuple[Hashable, ...]) -> ModelInput | None:
        with self._lock:
            return self._inputs.get(key)
