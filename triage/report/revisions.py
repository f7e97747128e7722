"""Revisions of the objects the node sends: current results in any PACS.

Most PACS keep the first copy of a SOP instance and ignore a second one with the same UID, so a
result that *changes* (late images, a re-run, a new model version) is sent as a new instance
that names the one it replaces (Predecessor Documents Sequence), in the same series, with a
higher InstanceNumber and a later ContentDate/Time. The *same* result sent again is the same
instance, so a retry never makes a duplicate.

Every model has one chain of revisions per study (the chain is named by the model; the node's
own chain, for a study that no active model could look at, has the empty name). Its SR series
UID derives from (study, chain): every revision lands in the same series. A revision's SOP
Instance UID derives from (study, chain, revision number, fingerprint), and the fingerprint is a
hash of what the document says: the model and version, the analysed images, the finding, the
probability, the priority, the lesion, or the reason it was not analysed. UIDs are deterministic
for a given result at a given place in its chain.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from pydicom.uid import generate_uid

from triage.errors import TriageError
from triage.results import ModelResult

#: The chain of the node itself: a study that no active model could analyse.
NODE_CHAIN = ""

#: Object kinds in a chain and the base of their series numbers (a stable digit per chain).
SERIES_NUMBER_BASE = {"sr": 990, "kos": 980, "seg": 970}


@dataclass(frozen=True)
class DocumentRef:
    """A document the node sent before: what a Predecessor Documents Sequence names."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str


@dataclass(frozen=True)
class Revision:
    """The place of one document in its chain: number (InstanceNumber), what it says (the
    fingerprint), the document it replaces, and when it was made (ContentDate/Time)."""

    chain: str
    number: int
    fingerprint: str
    content_datetime: datetime
    predecessor: DocumentRef | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.number, int) or self.number < 1:
            raise TriageError(
                f'Argument "number" must be a whole number >= 1, got {self.number!r}.'
            )
        if len(self.fingerprint) != 64:
            raise TriageError('Argument "fingerprint" must be a sha256 hex digest.')


def series_uid(study_uid: str, chain: str, kind: str = "sr") -> str:
    """The series of a chain's documents of one kind: the same for every revision."""
    _require_kind(kind)
    return _derived_uid(f"triage-{kind}-series", [study_uid, chain])


def instance_uid(study_uid: str, revision: Revision, kind: str = "sr") -> str:
    """The SOP Instance UID of a revision's document of one kind."""
    _require_kind(kind)
    inputs = [study_uid, revision.chain, revision.number, revision.fingerprint]
    return _derived_uid(f"triage-{kind}-instance", inputs)


def series_number(chain: str, kind: str = "sr") -> int:
    """Series number of a chain's series of one kind: 990-999 for SRs, 980-989 for KOS,
    970-979 for SEG, the last digit stable per model."""
    _require_kind(kind)
    return SERIES_NUMBER_BASE[kind] + zlib.crc32(chain.encode("utf-8")) % 10


def device_observer_uid(model_name: str, model_version: str) -> str:
    """A stable UID naming the model version as the documents' device observer."""
    return _derived_uid("triage-device", [model_name, model_version])


def result_fingerprint(
    result: ModelResult, analysed_sop_uids: Iterable[str], key_sop_uids: Sequence[str] = ()
) -> str:
    """What a result document says, hashed: equal for the same result on the same images."""
    lesion = None
    if result.lesion_volume_ml is not None:
        centre = result.lesion_centre_lps
        lesion = [
            round(float(result.lesion_volume_ml), 2),
            [round(float(v), 1) for v in centre] if centre is not None else None,
        ]
    return _fingerprint(
        {
            "kind": "result",
            "model": [result.model_name, result.model_version],
            "series": result.series_instance_uid,
            "images": sorted(set(analysed_sop_uids)),
            "finding": [result.finding.value, result.finding.scheme_designator],
            "probability": round(float(result.probability), 4),
            "threshold": float(result.threshold),
            "priority": result.priority.value,
            "lesion": lesion,
            "key_images": list(key_sop_uids),
            # only when checked: a result without a reference keeps the fingerprint it had
            **({"ood": _ood(result)} if result.ood_checked else {}),
        }
    )


def _ood(result: ModelResult) -> list[float | bool]:
    assert result.ood_score is not None and result.ood_threshold is not None
    return [round(float(result.ood_score), 2), float(result.ood_threshold), result.uncertain]


def not_analysed_fingerprint(model_name: str, model_version: str, reason: str) -> str:
    """What a not-analysed document says, hashed."""
    return _fingerprint(
        {"kind": "not analysed", "model": [model_name, model_version], "reason": reason}
    )


def _fingerprint(data: dict[str, object]) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _require_kind(kind: str) -> None:
    if kind not in SERIES_NUMBER_BASE:
        raise TriageError(f'Argument "kind" must be one of {", ".join(SERIES_NUMBER_BASE)}.')


def _derived_uid(role: str, inputs: Sequence[object]) -> str:
    """A UID hashed from ``role`` and ``inputs``; JSON keeps ("ab", "c") apart from ("a", "bc")."""
    return str(generate_uid(entropy_srcs=[json.dumps([role, *inputs])]))
