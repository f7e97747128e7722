"""What the catalogue hands out and takes in: frozen dataclasses, never live table rows.

A caller gets values it can keep after the session has closed, and cannot change the database
by changing them. The functions at the end build them from table rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from triage.catalogue.tables import Acknowledgement, Delivery, Result, RevisionState, Series
from triage.results import Priority, Role, is_uncertain


@dataclass(frozen=True)
class InstanceRecord:
    """What the receiver knows about one stored instance (header values, no pixels)."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    key: str
    size: int
    # an image of a kind the models analyse (CT or MR image storage): see record_instance
    triage_input: bool = True
    modality: str = ""
    body_part: str = ""
    series_description: str = ""
    series_number: str = ""
    image_type: str = ""
    accession_number: str = ""
    patient_id: str = ""
    study_description: str = ""
    study_date: str = ""
    convolution_kernel: str = ""
    slice_thickness: float | None = None  # mm; None when absent or not a number
    contrast_agent: str = ""
    frames: int = 1
    # the instance counts the sender announced for the series and for the study
    # (`triage.receive.announced`): None when it announced none, 0 when it cannot be right
    announced_series_instances: int | None = None
    announced_study_instances: int | None = None


@dataclass(frozen=True)
class SeriesSummary:
    """One series as series selection sees it: the header values of its first instance, the
    ImageTypes and SOP classes of all of them, and their object store keys."""

    series_instance_uid: str
    modality: str
    body_part: str
    series_description: str
    series_number: str
    image_types: tuple[str, ...]
    keys: tuple[str, ...]
    sop_classes: tuple[str, ...] = ()  # () when not known: no rule on SOP classes applies
    convolution_kernel: str = ""
    slice_thickness: float | None = None
    contrast_agent: str = ""
    frames: int | None = None  # over all instances; None when not known: one per instance

    @property
    def images(self) -> int:
        """How many images (frames) the series holds: what ``min_slices`` counts."""
        return len(self.keys) if self.frames is None else self.frames

    @classmethod
    def of_records(cls, records: Sequence[InstanceRecord]) -> SeriesSummary:
        """The summary of one series' instances as the receiver describes them (keys: theirs)."""
        first = records[0]
        return cls(
            series_instance_uid=first.series_instance_uid,
            modality=first.modality,
            body_part=first.body_part,
            series_description=first.series_description,
            series_number=first.series_number,
            image_types=tuple(sorted({r.image_type for r in records})),
            keys=tuple(r.key for r in records),
            sop_classes=tuple(sorted({r.sop_class_uid for r in records})),
            convolution_kernel=first.convolution_kernel,
            slice_thickness=first.slice_thickness,
            contrast_agent=first.contrast_agent,
            frames=sum(r.frames for r in records),
        )


@dataclass(frozen=True)
class FindingRow:
    model_name: str
    model_version: str
    name: str
    code: str
    probability: float
    threshold: float
    priority: str
    role: str = Role.ACTIVE
    lesion_volume_ml: float | None = None
    lesion_centre_lps: tuple[float, float, float] | None = None
    #: the input's out-of-distribution score and threshold (None: the model has no reference)
    ood_score: float | None = None
    ood_threshold: float | None = None
    #: a positive finding's evidence: where it is (LPS mm; a classifier's most salient point,
    #: a segmentation model's lesion centre) and the object-store key of the lesion mask
    key_point_lps: tuple[float, float, float] | None = None
    lesion_mask_key: str | None = None
    #: the series the model analysed ("" when not known)
    series_instance_uid: str = ""

    @property
    def uncertain(self) -> bool:
        """The input was unlike the model's training data: shown, never urgent."""
        return is_uncertain(self.ood_score, self.ood_threshold)


@dataclass(frozen=True)
class WorklistRow:
    study_instance_uid: str
    accession_number: str
    modality: str
    study_description: str
    state: str
    priority: str | None
    reason: str | None
    received_at: datetime
    triaged_at: datetime | None
    instances: int
    findings: tuple[FindingRow, ...]
    delivery: str | None = None  # the study's results: pending, delivered or dead (None: none)
    # results of models in shadow mode: recorded, never in the priority nor sent to the PACS
    shadow_findings: tuple[FindingRow, ...] = ()
    #: a newer, lower priority that waits for a person (`triage ack`); None when none does
    held_priority: str | None = None
    #: the worker that triaged the study or triages it now (None: not claimed yet)
    worker: str | None = None

    @property
    def rank(self) -> int:
        return Priority(self.priority).rank if self.priority else Priority.ROUTINE.rank

    @property
    def top_finding(self) -> FindingRow | None:
        return max(self.findings, key=lambda f: f.probability, default=None)


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    study_instance_uid: str
    sop_instance_uid: str
    key: str
    destination: str
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    kind: str = "sr"  # sr, kos, seg or hl7


@dataclass(frozen=True)
class Outgoing:
    """One object of a revision, and where it goes."""

    sop_instance_uid: str
    key: str
    destination: str
    kind: str = "sr"  # sr, kos, seg or hl7


@dataclass(frozen=True)
class NewRevision:
    """A revision the triage run made (objects built and stored), to record with its outcome."""

    chain: str
    number: int
    fingerprint: str
    priority: str
    model_version: str
    sr_sop_instance_uid: str
    sr_series_instance_uid: str
    predecessor_sop_instance_uid: str | None
    objects: tuple[Outgoing, ...]


@dataclass(frozen=True)
class ChainHead:
    """Where a chain stands: its newest revision, and the newest one that reached the outbox."""

    chain: str
    latest_number: int
    latest_fingerprint: str
    latest_state: str
    released_number: int | None
    released_fingerprint: str | None
    released_sr_sop_instance_uid: str | None
    released_sr_series_instance_uid: str | None
    released_priority: str | None

    def says(self, fingerprint: str) -> bool:
        """Whether the chain already says this: released, or held waiting for a person."""
        return fingerprint == self.released_fingerprint or (
            fingerprint == self.latest_fingerprint
            and self.latest_state in (RevisionState.RELEASED, RevisionState.HELD)
        )


@dataclass(frozen=True)
class AcknowledgementRow:
    study_instance_uid: str
    at: datetime
    who: str
    reason: str
    from_priority: str
    to_priority: str


def finding_row(r: Result) -> FindingRow:
    """One model's result as the worklist shows it (``details`` unpacked)."""
    details = json.loads(r.details) if r.details else {}
    centre = _point(details.get("lesion_centre_lps"))
    return FindingRow(
        r.model_name,
        r.model_version,
        r.finding_meaning,
        f"{r.finding_scheme}:{r.finding_value}",
        r.probability,
        r.threshold,
        r.priority,
        r.role,
        details.get("lesion_volume_ml"),
        centre,
        r.ood_score,
        r.ood_threshold,
        key_point_lps=_point(details.get("key_point_lps")),
        lesion_mask_key=details.get("lesion_mask_key"),
        series_instance_uid=r.series_instance_uid or "",
    )


def _point(value: Sequence[float] | None) -> tuple[float, float, float] | None:
    """An LPS point as ``details`` keeps it (a JSON list), or None."""
    return (float(value[0]), float(value[1]), float(value[2])) if value else None


class InstanceColumns(Protocol):
    """What ``series_summary`` reads of each instance (a query selects only these columns)."""

    @property
    def key(self) -> str: ...
    @property
    def image_type(self) -> str: ...
    @property
    def sop_class_uid(self) -> str: ...
    @property
    def frames(self) -> int | None: ...


def series_summary(series: Series, instances: Sequence[InstanceColumns]) -> SeriesSummary:
    """A catalogued series as selection sees it, from its row and those of its instances."""
    return SeriesSummary(
        series_instance_uid=series.series_instance_uid,
        modality=series.modality,
        body_part=series.body_part,
        series_description=series.series_description,
        series_number=series.series_number,
        image_types=tuple(sorted({row.image_type for row in instances})),
        keys=tuple(row.key for row in instances),
        sop_classes=tuple(sorted({row.sop_class_uid for row in instances})),
        convolution_kernel=series.convolution_kernel or "",
        slice_thickness=series.slice_thickness,
        contrast_agent=series.contrast_agent or "",
        frames=sum(int(row.frames or 1) for row in instances),
    )


def acknowledgement_row(a: Acknowledgement, study_uid: str) -> AcknowledgementRow:
    return AcknowledgementRow(study_uid, a.at, a.who, a.reason, a.from_priority, a.to_priority)


def delivery_row(d: Delivery, study_uid: str) -> DeliveryRow:
    """One outbox row as the delivery loop reads it (with its study's UID)."""
    return DeliveryRow(
        d.id,
        study_uid,
        d.sop_instance_uid,
        d.key,
        d.destination,
        d.state,
        d.attempts,
        d.next_attempt_at,
        d.last_error,
        d.kind,
    )
