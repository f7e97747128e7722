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


class Role(StrEnum):
    """What a model's result does: an ACTIVE one sets the study's priority and goes to the
    PACS; a SHADOW one is only recorded, to compare a candidate with the model in use."""

    ACTIVE = "active"
    SHADOW = "shadow"


class StudyState(StrEnum):
    """Where a study stands in the node (the catalogue's ``studies.state``)."""

    RECEIVING = "receiving"  # images still arriving (the quiet period has not passed)
    TRIAGING = "triaging"  # claimed by a triage run
    TRIAGED = "triaged"  # results recorded and their documents released
    NOT_ANALYSED = "not analysed"  # no model could look at it; the reason is recorded


class DeliveryState(StrEnum):
    """Where one outbox row stands (an SR, KOS, SEG or HL7 message to one destination)."""

    PENDING = "pending"  # waiting for its first or next attempt
    DELIVERED = "delivered"  # the destination accepted it
    DEAD = "dead"  # attempts used up: `triage outbox retry` sends it again


class ModelState(StrEnum):
    """Where a registered model version stands in its lifecycle."""

    REGISTERED = "registered"  # stored and checked, not running
    ACTIVE = "active"  # its results set priorities
    SHADOW = "shadow"  # runs beside the active one, results only recorded
    RETIRED = "retired"  # kept for the audit, never run


ACTIVE = Role.ACTIVE
SHADOW = Role.SHADOW


def is_uncertain(ood_score: float | None, ood_threshold: float | None) -> bool:
    """Whether an input's out-of-distribution score puts it beyond the model's reference
    (`triage.analysis.ood`): a score above the threshold. Unchecked (None) is not uncertain."""
    return ood_score is not None and ood_threshold is not None and ood_score > ood_threshold


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
    role: str = Role.ACTIVE
    #: what a segmentation model adds: the lesion's volume (mL) and centre (LPS mm)
    lesion_volume_ml: float | None = None
    lesion_centre_lps: tuple[float, float, float] | None = None
    #: a positive finding's evidence: where it is (LPS mm; a classifier's most salient point,
    #: a segmentation model's lesion centre) and the object-store key of the lesion mask
    key_point_lps: tuple[float, float, float] | None = None
    lesion_mask_key: str | None = None
    #: how unlike the model's reference inputs this one is (`triage.analysis.ood`), and the
    #: score above which it is *uncertain*; None when the model has no reference
    ood_score: float | None = None
    ood_threshold: float | None = None

    @property
    def positive(self) -> bool:
        return self.probability >= self.threshold

    @property
    def ood_checked(self) -> bool:
        return self.ood_score is not None and self.ood_threshold is not None

    @property
    def uncertain(self) -> bool:
        """*Uncertain: input unlike the training data*: the probability may mean nothing, so
        the result never makes the study urgent on its own."""
        return is_uncertain(self.ood_score, self.ood_threshold)
