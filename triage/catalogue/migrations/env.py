"""Alembic's entry point: runs the migrations on the connection `triage.catalogue.schema`
hands over (the catalogue never reads an alembic.ini)."""

from __future__ import annotations

from alembic import context

from triage.catalogue.tables import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters a table by copying it
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
