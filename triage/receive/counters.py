"""What the receivers of this process counted: per receiver (`ReceiveStats`, read by operators
and tests) and for the whole process as Prometheus counters in `REGISTRY`, which the node's
``/metrics`` serves (`triage.worklist.metrics`).

The counters keep their label sets small and fixed: an outcome for what was received, the
DIMSE status answered (``0xA700``, ``0xA900``, ``0xC210``, ...) for what was not.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter

from triage.dimse import CANNOT_UNDERSTAND, DATASET_DOES_NOT_MATCH, OUT_OF_RESOURCES

#: the receivers' counters, for the process's /metrics
REGISTRY = CollectorRegistry()

INSTANCES_RECEIVED = Counter(
    "triage_instances_received",
    "Instances this process received and answered with success (C-STORE or a pulled "
    "WADO-RS part), by outcome: stored (new) or duplicate (already stored, stored once)",
    ["outcome"],
    registry=REGISTRY,
)
INSTANCES_REJECTED = Counter(
    "triage_instances_rejected",
    "Instances this process answered with a failure status, by that DIMSE status: 0xA700 "
    "could not be stored (the sender retries), 0xA900 data set does not match its SOP class "
    "(quarantined), 0xC210 cannot be understood (quarantined)",
    ["status"],
    registry=REGISTRY,
)
ASSOCIATIONS_REJECTED = Counter(
    "triage_associations_rejected",
    "Associations this process's receiver rejected (A-ASSOCIATE-RJ): a called AE title not "
    "its own, or a calling AE (or host) that TRIAGE_ALLOWED_AES does not allow",
    registry=REGISTRY,
)

_OUTCOMES = {"stored": "stored", "duplicates": "duplicate"}
for _outcome in _OUTCOMES.values():  # shown at 0 before the first one
    INSTANCES_RECEIVED.labels(_outcome)
for _status in (OUT_OF_RESOURCES, DATASET_DOES_NOT_MATCH, CANNOT_UNDERSTAND):
    INSTANCES_REJECTED.labels(f"0x{_status:04X}")


def count(name: str, status: int | None = None) -> None:
    """Count one event of `ReceiveStats` (``name`` is its field) in the process's counters;
    ``status`` is the failure status answered for ``rejected`` and ``failed``."""
    if name in _OUTCOMES:
        INSTANCES_RECEIVED.labels(_OUTCOMES[name]).inc()
    elif name in ("rejected", "failed"):
        INSTANCES_REJECTED.labels("unknown" if status is None else f"0x{status:04X}").inc()
    elif name == "refused_associations":
        ASSOCIATIONS_REJECTED.inc()
    else:
        raise ValueError(f"no receiver counter is named {name!r}")


@dataclass
class ReceiveStats:
    """Counters of one receiver an operator (and the tests) can read while it runs; each
    addition also counts in the process's Prometheus counters (`count`)."""

    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    failed: int = 0
    refused_associations: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, status: int | None = None) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)
        count(name, status)
