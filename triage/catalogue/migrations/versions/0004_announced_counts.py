"""The instance counts that senders announce in the instances they send: a study whose
counts are all met is complete without waiting for its quiet period.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("announced_instances", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column(
                "announced_counts_wrong",
                sa.Boolean(),
                nullable=False,
                server_default=sa.false(),
            )
        )
    with op.batch_alter_table("series") as batch:
        batch.add_column(sa.Column("announced_instances", sa.Integer(), nullable=True))
    # what the images of a series received before said is not known: such a series is never
    # complete by its count (0), and its study waits for the quiet period as it did
    op.execute("UPDATE series SET announced_instances = 0")


def downgrade() -> None:
    with op.batch_alter_table("series") as batch:
        batch.drop_column("announced_instances")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("announced_counts_wrong")
        batch.drop_column("announced_instances")
