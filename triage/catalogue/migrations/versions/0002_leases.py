"""Work shared by many workers: a study's triage and an outbox row are claimed with a lease
(who holds it, until when), so that a worker that dies loses its work to another.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("worker", sa.String(128), nullable=True))
        batch.add_column(sa.Column("lease_expires", sa.DateTime(), nullable=True))
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(128), nullable=True))
        batch.add_column(sa.Column("lease_expires", sa.DateTime(), nullable=True))
    # a study left triaging by a node of the version before (it requeued them at its start):
    # back to receiving on a new generation, to be claimed like any other
    op.execute(
        "UPDATE studies SET state = 'receiving', generation = generation + 1 "
        "WHERE state = 'triaging'"
    )


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("lease_expires")
        batch.drop_column("lease_owner")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("lease_expires")
        batch.drop_column("worker")
