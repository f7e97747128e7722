"""The catalogue: what was received, what state each study is in, what the models said.

Everything a caller needs is imported from here; the modules behind it are the catalogue's own
(``catalogue.py`` says which part does what).
"""

from triage.catalogue.accounts import ROLES, AccessRecord, Account, Login
from triage.catalogue.announced import WRONG_COUNT
from triage.catalogue.catalogue import Catalogue
from triage.catalogue.database import BUSY_TIMEOUT_SECONDS, RECORD_LOCK_WAIT_SECONDS
from triage.catalogue.live_rates import LiveRates
from triage.catalogue.rows import (
    AcknowledgementRow,
    ChainHead,
    DeliveryRow,
    FindingRow,
    InstanceRecord,
    NewRevision,
    Outgoing,
    SeriesSummary,
    WorklistRow,
    finding_row,
)
from triage.catalogue.tables import (
    DEAD,
    DELIVERED,
    NOT_ANALYSED,
    PENDING,
    RECEIVING,
    TRIAGED,
    TRIAGING,
    Acknowledgement,
    Base,
    Delivery,
    Instance,
    ModelChange,
    ModelVersion,
    ReportRevision,
    Result,
    RevisionState,
    Series,
    Study,
    utcnow,
)

__all__ = [
    "ROLES",
    "AccessRecord",
    "Account",
    "Login",
    "Acknowledgement",
    "AcknowledgementRow",
    "BUSY_TIMEOUT_SECONDS",
    "Base",
    "Catalogue",
    "ChainHead",
    "DEAD",
    "DELIVERED",
    "Delivery",
    "DeliveryRow",
    "FindingRow",
    "Instance",
    "InstanceRecord",
    "LiveRates",
    "ModelChange",
    "ModelVersion",
    "NOT_ANALYSED",
    "NewRevision",
    "Outgoing",
    "PENDING",
    "RECEIVING",
    "RECORD_LOCK_WAIT_SECONDS",
    "ReportRevision",
    "Result",
    "RevisionState",
    "Series",
    "SeriesSummary",
    "Study",
    "TRIAGED",
    "TRIAGING",
    "WRONG_COUNT",
    "WorklistRow",
    "finding_row",
    "utcnow",
]
