"""The catalogue's schema migrations (Alembic): ``versions/`` holds one file per change of
schema, applied in order by `triage db upgrade` or, for the embedded SQLite catalogue, when the
node opens it (`triage.catalogue.schema`)."""
