"""The catalogue as it stood when migrations began: every table, or, in a catalogue made
before then (tables created on opening, columns patched in), the columns it still lacks.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# what a catalogue made before migrations may lack: (table, column) -> how to add it
_ADDED_BEFORE_MIGRATIONS: dict[tuple[str, str], sa.Column[Any]] = {
    ("results", "role"): sa.Column("role", sa.String(16), nullable=False, server_default="active"),
    ("results", "details"): sa.Column("details", sa.Text(), nullable=True),
    ("studies", "held_priority"): sa.Column("held_priority", sa.String(32), nullable=True),
    ("outbox", "kind"): sa.Column("kind", sa.String(16), nullable=False, server_default="sr"),
    ("series", "convolution_kernel"): sa.Column(
        "convolution_kernel", sa.String(64), nullable=False, server_default=""
    ),
    ("series", "slice_thickness"): sa.Column("slice_thickness", sa.Float(), nullable=True),
    ("series", "contrast_agent"): sa.Column(
        "contrast_agent", sa.String(64), nullable=False, server_default=""
    ),
    ("instances", "frames"): sa.Column("frames", sa.Integer(), nullable=False, server_default="1"),
    ("results", "ood_score"): sa.Column("ood_score", sa.Float(), nullable=True),
    ("results", "ood_threshold"): sa.Column("ood_threshold", sa.Float(), nullable=True),
    ("model_versions", "reference"): sa.Column("reference", sa.Text(), nullable=True),
}


def _pk() -> sa.Column:
    return sa.Column("id", sa.Integer(), primary_key=True)


def _tables() -> list[tuple[str, list[Any], list[str]]]:
    """(name, columns and constraints, indexed columns) of every table, parents first; an
    indexed column named with a leading "!" has a unique index (as the tables declare it)."""
    s, t, i, f, d = sa.String, sa.Text, sa.Integer, sa.Float, sa.DateTime
    return [
        (
            "studies",
            [
                _pk(),
                sa.Column("study_instance_uid", s(64), nullable=False),
                sa.Column("accession_number", s(64), nullable=False),
                sa.Column("patient_id", s(64), nullable=False),
                sa.Column("study_description", s(128), nullable=False),
                sa.Column("study_date", s(8), nullable=False),
                sa.Column("state", s(32), nullable=False),
                sa.Column("generation", i(), nullable=False),
                sa.Column("priority", s(32), nullable=True),
                sa.Column("reason", t(), nullable=True),
                sa.Column("first_received_at", d(), nullable=False),
                sa.Column("last_instance_at", d(), nullable=False),
                sa.Column("triaged_at", d(), nullable=True),
                sa.Column("timings", t(), nullable=True),
                sa.Column("held_priority", s(32), nullable=True),
            ],
            ["state", "last_instance_at", "!study_instance_uid"],
        ),
        (
            "series",
            [
                _pk(),
                sa.Column("study_id", i(), sa.ForeignKey("studies.id"), nullable=False),
                sa.Column("series_instance_uid", s(64), nullable=False),
                sa.Column("modality", s(16), nullable=False),
                sa.Column("body_part", s(64), nullable=False),
                sa.Column("series_description", s(128), nullable=False),
                sa.Column("series_number", s(16), nullable=False),
                sa.Column("convolution_kernel", s(64), nullable=False, server_default=""),
                sa.Column("slice_thickness", f(), nullable=True),
                sa.Column("contrast_agent", s(64), nullable=False, server_default=""),
            ],
            ["study_id", "!series_instance_uid"],
        ),
        (
            "instances",
            [
                _pk(),
                sa.Column("series_id", i(), sa.ForeignKey("series.id"), nullable=False),
                sa.Column("sop_instance_uid", s(64), nullable=False),
                sa.Column("sop_class_uid", s(64), nullable=False),
                sa.Column("transfer_syntax_uid", s(64), nullable=False),
                sa.Column("image_type", s(128), nullable=False),
                sa.Column("frames", i(), nullable=False, server_default="1"),
                sa.Column("key", s(256), nullable=False),
                sa.Column("size", i(), nullable=False),
                sa.Column("received_at", d(), nullable=False),
            ],
            ["series_id", "!sop_instance_uid"],
        ),
        (
            "results",
            [
                _pk(),
                sa.Column("study_id", i(), sa.ForeignKey("studies.id"), nullable=False),
                sa.Column("model_name", s(64), nullable=False),
                sa.Column("model_version", s(64), nullable=False),
                sa.Column("series_instance_uid", s(64), nullable=False),
                sa.Column("finding_value", s(64), nullable=False),
                sa.Column("finding_scheme", s(16), nullable=False),
                sa.Column("finding_meaning", s(128), nullable=False),
                sa.Column("probability", f(), nullable=False),
                sa.Column("threshold", f(), nullable=False),
                sa.Column("priority", s(32), nullable=False),
                sa.Column("sr_sop_instance_uid", s(64), nullable=True),
                sa.Column("created_at", d(), nullable=False),
                sa.Column("role", s(16), nullable=False, server_default="active"),
                sa.Column("details", t(), nullable=True),
                sa.Column("ood_score", f(), nullable=True),
                sa.Column("ood_threshold", f(), nullable=True),
                sa.UniqueConstraint("study_id", "model_name", "model_version"),
            ],
            ["study_id"],
        ),
        (
            "model_versions",
            [
                _pk(),
                sa.Column("name", s(64), nullable=False),
                sa.Column("version", s(64), nullable=False),
                sa.Column("content_hash", s(64), nullable=False),
                sa.Column("key", s(256), nullable=False),
                sa.Column("task", s(32), nullable=False),
                sa.Column("state", s(16), nullable=False),
                sa.Column("options", t(), nullable=False),
                sa.Column("summary", t(), nullable=False),
                sa.Column("trial", t(), nullable=True),
                sa.Column("evaluation", t(), nullable=True),
                sa.Column("reference", t(), nullable=True),
                sa.Column("registered_at", d(), nullable=False),
                sa.Column("registered_by", s(128), nullable=False),
                sa.UniqueConstraint("name", "version"),
            ],
            ["name", "state"],
        ),
        (
            "model_changes",
            [
                _pk(),
                sa.Column("at", d(), nullable=False),
                sa.Column("who", s(128), nullable=False),
                sa.Column("action", s(32), nullable=False),
                sa.Column("model_name", s(64), nullable=False),
                sa.Column("model_version", s(64), nullable=False),
                sa.Column("from_state", s(16), nullable=True),
                sa.Column("to_state", s(16), nullable=False),
                sa.Column("reason", t(), nullable=False),
            ],
            ["model_name"],
        ),
        (
            "outbox",
            [
                _pk(),
                sa.Column("study_id", i(), sa.ForeignKey("studies.id"), nullable=False),
                sa.Column("sop_instance_uid", s(64), nullable=False),
                sa.Column("key", s(256), nullable=False),
                sa.Column("destination", s(128), nullable=False),
                sa.Column("state", s(16), nullable=False),
                sa.Column("attempts", i(), nullable=False),
                sa.Column("next_attempt_at", d(), nullable=False),
                sa.Column("last_error", t(), nullable=True),
                sa.Column("created_at", d(), nullable=False),
                sa.Column("delivered_at", d(), nullable=True),
                sa.Column("kind", s(16), nullable=False, server_default="sr"),
                sa.UniqueConstraint("sop_instance_uid", "destination"),
            ],
            ["study_id", "state"],
        ),
        (
            "report_revisions",
            [
                _pk(),
                sa.Column("study_id", i(), sa.ForeignKey("studies.id"), nullable=False),
                sa.Column("chain", s(64), nullable=False),
                sa.Column("number", i(), nullable=False),
                sa.Column("fingerprint", s(64), nullable=False),
                sa.Column("priority", s(32), nullable=False),
                sa.Column("model_version", s(64), nullable=False),
                sa.Column("sr_sop_instance_uid", s(64), nullable=False),
                sa.Column("sr_series_instance_uid", s(64), nullable=False),
                sa.Column("predecessor_sop_instance_uid", s(64), nullable=True),
                sa.Column("state", s(16), nullable=False),
                sa.Column("objects", t(), nullable=False),
                sa.Column("generation", i(), nullable=False),
                sa.Column("created_at", d(), nullable=False),
                sa.Column("released_at", d(), nullable=True),
                sa.UniqueConstraint("study_id", "chain", "number"),
            ],
            ["study_id", "state"],
        ),
        (
            "acknowledgements",
            [
                _pk(),
                sa.Column("study_id", i(), sa.ForeignKey("studies.id"), nullable=False),
                sa.Column("at", d(), nullable=False),
                sa.Column("who", s(128), nullable=False),
                sa.Column("reason", t(), nullable=False),
                sa.Column("from_priority", s(32), nullable=False),
                sa.Column("to_priority", s(32), nullable=False),
            ],
            ["study_id"],
        ),
    ]


def upgrade() -> None:
    existing = sa.inspect(op.get_bind())
    present = set(existing.get_table_names())
    for name, columns, indexed in _tables():
        if name not in present:
            op.create_table(name, *columns)
            for indexed_column in indexed:
                unique = indexed_column.startswith("!")
                column_name = indexed_column.lstrip("!")
                op.create_index(f"ix_{name}_{column_name}", name, [column_name], unique=unique)
            continue
        have = {c["name"] for c in existing.get_columns(name)}
        missing = [
            added
            for (table, added_name), added in _ADDED_BEFORE_MIGRATIONS.items()
            if table == name and added_name not in have
        ]
        if missing:
            with op.batch_alter_table(name) as batch:
                for added in missing:
                    batch.add_column(added)


def downgrade() -> None:
    for name, _columns, _indexed in reversed(_tables()):
        op.drop_table(name)
