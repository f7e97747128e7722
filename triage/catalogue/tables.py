"""The catalogue's tables: one SQLAlchemy declarative base and every table the node keeps.

Nothing here is SQLite-specific, so the same schema runs on PostgreSQL when several machines
share the work. A change here is also a migration (``migrations/versions``): the test of the
schema compares what the migrations make with these tables.

Study states: ``receiving`` (instances arriving) -> ``triaging`` -> ``triaged`` or
``not analysed``. Outbox states: ``pending`` -> ``delivered``, or ``dead`` after the last try.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from triage.results import DeliveryState, Role, StudyState

# the states' short names, as the catalogue's modules and the tests use them
RECEIVING = StudyState.RECEIVING
TRIAGING = StudyState.TRIAGING
TRIAGED = StudyState.TRIAGED
NOT_ANALYSED = StudyState.NOT_ANALYSED

PENDING = DeliveryState.PENDING
DELIVERED = DeliveryState.DELIVERED
DEAD = DeliveryState.DEAD


class RevisionState(StrEnum):
    """Where a revision of a result document stands (``triage.catalogue.reports``)."""

    RELEASED = "released"
    HELD = "held"
    DISCARDED = "discarded"


def utcnow() -> datetime:
    """Now in UTC, without a zone: what every DateTime column holds."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Study(Base):
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    accession_number: Mapped[str] = mapped_column(String(64), default="")
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    study_description: Mapped[str] = mapped_column(String(128), default="")
    study_date: Mapped[str] = mapped_column(String(8), default="")
    state: Mapped[str] = mapped_column(String(32), default=RECEIVING, index=True)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    priority: Mapped[str | None] = mapped_column(String(32), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    first_received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_instance_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    triaged_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    timings: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: a re-run's lower priority, held until a person acknowledges it (`triage ack`)
    held_priority: Mapped[str | None] = mapped_column(String(32), nullable=True)
    #: the worker that triages (or last triaged) the study (TRIAGE_WORKER_NAME)
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    #: while triaging: until when the worker's claim holds; renewed while it works
    lease_expires: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    #: how many instances its senders said the study has (Number of Study Related Instances);
    #: NULL when none said (`triage.catalogue.announced`)
    announced_instances: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: an announced count of the study or of one of its series disagreed with another or
    #: cannot be right: the quiet period alone says when the study is complete
    announced_counts_wrong: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )


class Series(Base):
    __tablename__ = "series"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    body_part: Mapped[str] = mapped_column(String(64), default="")
    series_description: Mapped[str] = mapped_column(String(128), default="")
    series_number: Mapped[str] = mapped_column(String(16), default="")
    # what series selection rules read (triage.analysis.selection), from the first instance
    convolution_kernel: Mapped[str] = mapped_column(String(64), default="", server_default="")
    slice_thickness: Mapped[float | None] = mapped_column(Float, nullable=True)
    contrast_agent: Mapped[str] = mapped_column(String(64), default="", server_default="")
    #: how many instances its first image the models analyse said the series has (Number of
    #: Series Related Instances, Images in Acquisition); 0 when it said none; NULL: no such
    #: image in the series (`triage.catalogue.announced`)
    announced_instances: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Instance(Base):
    __tablename__ = "instances"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    image_type: Mapped[str] = mapped_column(String(128), default="")
    frames: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    key: Mapped[str] = mapped_column(String(256))
    size: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Result(Base):
    __tablename__ = "results"
    __table_args__ = (UniqueConstraint("study_id", "model_name", "model_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    finding_value: Mapped[str] = mapped_column(String(64))
    finding_scheme: Mapped[str] = mapped_column(String(16))
    finding_meaning: Mapped[str] = mapped_column(String(128))
    probability: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    priority: Mapped[str] = mapped_column(String(32))
    sr_sop_instance_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # "active" results set the study's priority and go to the PACS; "shadow" ones are kept only
    role: Mapped[str] = mapped_column(
        String(16), default=Role.ACTIVE, server_default=Role.ACTIVE.value
    )
    # JSON: what a segmentation model adds (lesion volume in mL, lesion centre in LPS mm)
    details: Mapped[str | None] = mapped_column(Text, nullable=True)
    # how unlike the model's reference inputs the input was, and the score that is too far
    # (`triage.analysis.ood`); NULL when the model has no reference
    ood_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    ood_threshold: Mapped[float | None] = mapped_column(Float, nullable=True)


class ModelVersion(Base):
    """One registered model version: an immutable bundle in the object store (``key``)."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[str] = mapped_column(String(64))
    content_hash: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(256))
    task: Mapped[str] = mapped_column(String(32))
    # registered (stored, not running), active, shadow or retired
    state: Mapped[str] = mapped_column(String(16), index=True)
    options: Mapped[str] = mapped_column(Text)  # JSON, as registered
    summary: Mapped[str] = mapped_column(Text)  # JSON: bundle metadata worth showing
    trial: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON: the trial run
    evaluation: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON: the last one
    # JSON: the statistics of the inputs it is meant for (`triage.analysis.ood.Reference`)
    reference: Mapped[str | None] = mapped_column(Text, nullable=True)
    registered_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    registered_by: Mapped[str] = mapped_column(String(128))


class ModelChange(Base):
    """The model audit trail: every registration and change of state, who, when and why."""

    __tablename__ = "model_changes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    who: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    model_name: Mapped[str] = mapped_column(String(64), index=True)
    model_version: Mapped[str] = mapped_column(String(64))
    from_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")


class Delivery(Base):
    """The outbox: one row per object to send (an SR, its KOS or SEG, an HL7 message) and
    destination; it stays until delivered or dead-lettered."""

    __tablename__ = "outbox"
    __table_args__ = (UniqueConstraint("sop_instance_uid", "destination"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(256))
    destination: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), default=PENDING, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    #: what it is: sr, kos, seg or hl7
    kind: Mapped[str] = mapped_column(String(16), default="sr", server_default="sr")
    #: the worker trying it now, and until when that try is its own
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class ReportRevision(Base):
    """One revision of one model's result document (its SR, and the KOS/SEG/HL7 with it)."""

    __tablename__ = "report_revisions"
    __table_args__ = (UniqueConstraint("study_id", "chain", "number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    chain: Mapped[str] = mapped_column(String(64))  # the model's name; "" for the node's own
    number: Mapped[int] = mapped_column(Integer)  # the SR's InstanceNumber
    fingerprint: Mapped[str] = mapped_column(String(64))
    priority: Mapped[str] = mapped_column(String(32))  # what it says
    model_version: Mapped[str] = mapped_column(String(64), default="")
    sr_sop_instance_uid: Mapped[str] = mapped_column(String(64))
    sr_series_instance_uid: Mapped[str] = mapped_column(String(64))
    predecessor_sop_instance_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default=RevisionState.RELEASED, index=True)
    #: JSON list of [sop_instance_uid, key, destination, kind]: what goes to the outbox on release
    objects: Mapped[str] = mapped_column(Text, default="[]")
    generation: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    released_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Acknowledgement(Base):
    """A person accepted a lower priority for a study (`triage ack`): the audit of downgrades."""

    __tablename__ = "acknowledgements"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    who: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    from_priority: Mapped[str] = mapped_column(String(32))
    to_priority: Mapped[str] = mapped_column(String(32))


def study_row(s: Session, study_uid: str) -> Study | None:
    """The study's row, or None when nothing of it was catalogued: what most queries start at."""
    return s.scalar(select(Study).where(Study.study_instance_uid == study_uid))


class User(Base):
    """A person who logs in to the web app (`triage users`): a name, a role, a password hash."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    #: clinician (reads), engineer (also shadow results and models) or admin (also changes)
    role: Mapped[str] = mapped_column(String(16))
    #: argon2id, in its PHC string form; the password itself is never stored
    password_hash: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class WebSession(Base):
    """A login: the browser holds the token, the catalogue only its SHA-256 (a stolen copy of
    the database opens no session)."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    #: what every form and change must carry back (CSRF)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class AccessEvent(Base):
    """The access audit: who viewed which study, who logged in (or failed to), who changed
    what through the web app or its API."""

    __tablename__ = "access_audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    who: Mapped[str] = mapped_column(String(64), index=True)
    #: e.g. login, login failed, logout, view study, rerun, ack, outbox retry, outbox drop
    action: Mapped[str] = mapped_column(String(32), index=True)
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    client: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
