"""What a triage run produces: priorities and per-model results.

These are plain values passed between the inference, priority, SR and catalogue modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydicom.sr.coding import Code


class Priority(StrEnum):
    """Worklist priority of a study, in the radiologist's words."""

    URGENT = "urgent"
    ROUTINE = "routine"
    NOT_ANALYSED = "not analysed"

    @property
    def rank(self) -> int:
        """Sort key: lower comes first. *Not analysed* sits with routine, never below it."""
        return 0 if self is Priority.URGENT else 1


ACTIVE = "active"
SHADOW = "shadow"


@dataclass(frozen=True)
class ModelResult:
    """One model's verdict on one series of a study."""

    model_name: str
    model_version: str
    finding: Code
    probability: float
    threshold: float
    priority: Priority
    series_instance_uid: str
    #: ACTIVE results set the study's priority and go to the PACS; SHADOW ones are only recorded
    role: str = "active"
    #: what a segmentation model adds: the lesion's volume (mL) and centre (LPS mm)
    lesion_volume_ml: float | None = None
    lesion_centre_lps: tuple[float, float, float] | None = None
    #: a positive finding's evidence: where it is (LPS mm; a classifier's most salient point,
    #: a segmentation model's lesion centre) and the object-store key of the lesion mask
    key_point_lps: tuple[float, float, float] | None = None
    lesion_mask_key: str | None = None

    @property
    def positive(self) -> bool:
        return self.probability >= self.threshold
