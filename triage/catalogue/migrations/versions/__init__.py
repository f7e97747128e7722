"""One Alembic revision per change of the catalogue's schema, oldest first."""
