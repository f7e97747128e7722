"""The catalogue's schema level: which migration a database is at, and bringing it to the
level this version of triage needs (Alembic, the revisions in ``migrations/versions``).

When a node opens its catalogue (`Database`):

- at this version's level: it opens;
- an empty database (a first start) or the embedded SQLite catalogue (one node owns it): it is
  upgraded there and then, and the log says so;
- a shared database (PostgreSQL) at an older level: start-up stops and says to run
  `triage db upgrade` - an upgrade is an operator's step, taken once, with every node of the
  old version stopped (docs/operations.md);
- at a level this version does not know (a newer triage upgraded it): start-up stops.

Two processes upgrading at once wait for each other (an advisory lock on PostgreSQL, a lock
file beside a SQLite database), and the second finds the work done.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from triage.errors import StorageError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
# any constant: the key of the PostgreSQL advisory lock held while migrating
_LOCK_KEY = 0x7472696167  # "triag"


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@lru_cache(maxsize=1)
def head() -> str:
    """The level this version of triage needs: the newest revision it ships."""
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None, "the catalogue has no migrations"
    return revision


def known(revision: str) -> bool:
    scripts = ScriptDirectory.from_config(_config())
    return any(script.revision == revision for script in scripts.walk_revisions())


def current(connection: Connection) -> str | None:
    """The database's level; None for an empty database or one made before migrations."""
    return MigrationContext.configure(connection).get_current_revision()


def is_empty(connection: Connection) -> bool:
    return not inspect(connection).get_table_names()


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the database to `head()`; returns (the level it was at, the level it is at)."""
    with _migration_lock(engine), engine.connect() as connection:
        before = current(connection)
        if before != head():
            if before is not None and not known(before):
                raise StorageError(_newer(before))
            command.upgrade(_config(connection), "head")
            connection.commit()
        return before, head()


class Standing(StrEnum):
    """Where a database stands against the level this version needs."""

    CURRENT = "current"
    EMPTY = "empty"  # no tables: the first node to start creates them
    BEHIND = "behind"  # an older level (or made before migrations): `triage db upgrade`
    NEWER = "newer"  # a level this version does not know: a newer triage upgraded it


@dataclass(frozen=True)
class SchemaLevel:
    level: str | None
    standing: Standing


def level_of(engine: Engine) -> SchemaLevel:
    """The database's level and where it stands (what start-up, `triage db status` and
    `triage doctor` decide on)."""
    with engine.connect() as connection:
        level = current(connection)
        if level == head():
            return SchemaLevel(level, Standing.CURRENT)
        if level is None and is_empty(connection):
            return SchemaLevel(level, Standing.EMPTY)
    if level is not None and not known(level):
        return SchemaLevel(level, Standing.NEWER)
    return SchemaLevel(level, Standing.BEHIND)


def ensure_current(engine: Engine, *, variable: str = "TRIAGE_DATABASE_URL") -> None:
    """Open-time check (the module's docstring says what happens at each level)."""
    found = level_of(engine)
    if found.standing is Standing.CURRENT:
        return
    if found.standing is Standing.NEWER:
        raise StorageError(_newer(found.level or ""))
    if engine.dialect.name == "sqlite" or found.standing is Standing.EMPTY:
        before, after = upgrade(engine)
        if before != after:
            log.info("catalogue schema upgraded from %s to %s", before or "none", after)
        return
    raise StorageError(
        f"the catalogue database ({variable}) is at schema level {found.level or 'none'} and "
        f"this version of triage needs {head()}: stop the nodes of the older version and run "
        "`triage db upgrade` once"
    )


def _newer(level: str) -> str:
    return (
        f"the catalogue database is at schema level {level}, which this version of triage "
        f"does not know (it needs {head()}): a newer triage upgraded it; run that version"
    )


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _LOCK_KEY})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _LOCK_KEY})
                connection.commit()
        return
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    try:
        lock = open(f"{database}.migrating", "a")  # noqa: SIM115 - held across the yield
    except OSError as exc:
        raise StorageError(f"cannot open the catalogue database {database}: {exc}") from exc
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
