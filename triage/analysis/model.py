"""A model as the pipeline runs it: `TriageModel` and the option values it carries.

Analysis needs to know what a model is (which series, which input, how its output becomes the
probability of its finding, its threshold, priority and role) but not where it came from:
`triage.modelops` builds these from MONAI bundles and registered versions, and hands each one
the loader of its network. So the earlier stage (analysis) never imports the later one.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydicom.sr.coding import Code

from triage.analysis.ood import Reference
from triage.analysis.preprocess import InputSpec
from triage.analysis.selection import SeriesRule
from triage.errors import ModelError
from triage.results import Priority, Role

#: Builds a model's network from its folder, with its weights, on a device, in eval mode
#: (`triage.modelops.network.load_network` for a MONAI bundle).
NetworkLoader = Callable[[Path, torch.device], torch.nn.Module]


@dataclass(frozen=True)
class SegmentationScore:
    """How a segmentation model's lesion channel becomes the finding's probability.

    ``max_probability``: the highest voxel probability. ``lesion_volume``: the volume V (mL) of
    the voxels at or above ``voxel_threshold`` gives V / (V + ``half_volume_ml``), 0.5 at
    ``half_volume_ml``. Either way the lesion (voxels at or above ``voxel_threshold``) gives the
    volume and the centre reported in the SR.
    """

    score: str = "max_probability"
    voxel_threshold: float = 0.5
    half_volume_ml: float = 0.5

    def as_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "voxel_threshold": self.voxel_threshold,
            "half_volume_ml": self.half_volume_ml,
        }


@dataclass(frozen=True)
class SlidingWindow:
    """Run the network on overlapping windows of ``roi_size`` (MONAI sliding_window_inference)."""

    roi_size: tuple[int, int, int]
    overlap: float = 0.25
    sw_batch_size: int = 1
    mode: str = "gaussian"

    def as_dict(self) -> dict[str, Any]:
        return {
            "roi_size": list(self.roi_size),
            "overlap": self.overlap,
            "sw_batch_size": self.sw_batch_size,
            "mode": self.mode,
        }


@dataclass
class TriageModel:
    """One model version as the pipeline runs it (the network is loaded on first use)."""

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
    task: str = "classification"
    segmentation: SegmentationScore | None = None
    sliding_window: SlidingWindow | None = None
    #: "active" (changes priorities, reports to the PACS) or "shadow" (recorded only)
    role: str = Role.ACTIVE
    #: the statistics of the inputs the model is meant for, recorded at registration: each
    #: input's out-of-distribution score is measured against it (None: no check, said so)
    reference: Reference | None = field(default=None, repr=False, compare=False)
    #: how the network is built from ``path``; set by whoever made the model (its bundle)
    loader: NetworkLoader | None = field(default=None, repr=False, compare=False)
    _networks: dict[str, torch.nn.Module] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def network(self, device: torch.device) -> torch.nn.Module:
        """The network with its weights, on device, in eval mode (loaded once per device)."""
        with self._lock:
            if str(device) not in self._networks:
                if self.loader is None:
                    raise ModelError(
                        f"model {self.name} {self.version} has no network loader: make it "
                        "from its bundle (triage.modelops.bundle.read_bundle(folder).model()) "
                        "or pass loader=triage.modelops.network.load_network"
                    )
                self._networks[str(device)] = self.loader(self.path, device)
            return self._networks[str(device)]

    def with_role(self, role: str) -> TriageModel:
        """The same model (and loaded network) in another role."""
        return dataclasses.replace(self, role=role)
