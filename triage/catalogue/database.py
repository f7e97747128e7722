"""The catalogue's database: the engine, sessions, transactions that wait out a locked
database (within bounds), the SQLite tuning, and the columns added to an older database.

``Database`` is the base every part of the ``Catalogue`` builds on (``receiving``, ``studies``,
``outbox``, ``worklist``): each part reads in ``session()`` and writes in ``transaction()``.
SQLAlchemy over SQLite by default; nothing here is SQLite-specific beyond connection tuning, so
the same schema runs on PostgreSQL when several machines share the work.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from triage.catalogue.tables import Base
from triage.errors import StorageError

T = TypeVar("T")

# How long one transaction waits for another's lock on SQLite before "database is locked"
BUSY_TIMEOUT_SECONDS = 30
# How long the receiver's catalogue write waits for a locked database, all tries together,
# before it gives up and the C-STORE is answered 0xA700: below the DIMSE timeouts of common
# senders (Orthanc 10 s, pynetdicom 30 s), so the sender hears a status it retries on instead
# of timing out and aborting the association.
RECORD_LOCK_WAIT_SECONDS = 8.0


# Columns added since the first release, added to an older database when it is opened
_ADDED_COLUMNS = (
    ("results", "role", "VARCHAR(16) NOT NULL DEFAULT 'active'"),
    ("results", "details", "TEXT"),
    ("studies", "held_priority", "VARCHAR(32)"),
    ("outbox", "kind", "VARCHAR(16) NOT NULL DEFAULT 'sr'"),
    ("series", "convolution_kernel", "VARCHAR(64) NOT NULL DEFAULT ''"),
    ("series", "slice_thickness", "FLOAT"),
    ("series", "contrast_agent", "VARCHAR(64) NOT NULL DEFAULT ''"),
    ("instances", "frames", "INTEGER NOT NULL DEFAULT 1"),
    ("results", "ood_score", "FLOAT"),
    ("results", "ood_threshold", "FLOAT"),
    ("model_versions", "reference", "TEXT"),
)


def _add_missing_columns(engine: Engine) -> None:
    for table, column, ddl in _ADDED_COLUMNS:
        if column in {c["name"] for c in inspect(engine).get_columns(table)}:
            continue
        try:
            with engine.begin() as connection:
                connection.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}"))
        except (OperationalError, ProgrammingError):
            # another process added it at the same moment
            if column not in {c["name"] for c in inspect(engine).get_columns(table)}:
                raise


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL: a commit is not fsynced on its own. The received bytes are (the store fsyncs
    # them before the receiver answers), and after an unclean stop the receiver catalogues
    # any stored instance whose row was lost (Receiver.reconcile).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_SECONDS * 1000}")
    cursor.close()


def _reset_busy_timeout(dbapi_connection: Any, _record: Any) -> None:
    """A connection goes back to the pool with the default lock wait (a bounded write may
    have shortened it)."""
    if dbapi_connection is not None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_SECONDS * 1000}")
        cursor.close()


class Database:
    """An open catalogue database (created or migrated on opening), and its transactions."""

    def __init__(self, url: str) -> None:
        try:
            if url.startswith("sqlite"):
                self.engine: Engine = create_engine(
                    url, connect_args={"timeout": BUSY_TIMEOUT_SECONDS}
                )
                event.listen(self.engine, "connect", _sqlite_pragmas)
                event.listen(self.engine, "checkin", _reset_busy_timeout)
            else:
                self.engine = create_engine(url, pool_pre_ping=True)
            Base.metadata.create_all(self.engine)
            _add_missing_columns(self.engine)
        except OperationalError as exc:
            raise StorageError(f"cannot open the catalogue database {url}: {exc.orig}") from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.record_lock_wait_seconds = RECORD_LOCK_WAIT_SECONDS
        # None: a write tries 5 times, each waiting up to BUSY_TIMEOUT_SECONDS for a lock
        self.lock_wait_seconds: float | None = None

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction, committed when the block ends (rolled back if it raises)."""
        with self._sessions.begin() as session:
            yield session

    def transaction(
        self, work: Callable[[Session], T], attempts: int = 5, deadline: float | None = None
    ) -> T:
        """Run ``work`` in one transaction, retrying when the database is momentarily locked or
        busy; what ``work`` returns is returned.

        Each try waits up to BUSY_TIMEOUT_SECONDS for a lock. With ``deadline`` (a
        ``time.monotonic()`` value), or ``lock_wait_seconds`` set, the tries together wait that
        long at most, and then raise StorageError like any other failure.
        """
        if deadline is None and self.lock_wait_seconds is not None:
            deadline = time.monotonic() + self.lock_wait_seconds
        attempt = 0
        while True:
            try:
                with self.session() as session:
                    if deadline is not None:
                        self._limit_lock_wait(session, deadline - time.monotonic())
                    return work(session)
            except OperationalError as exc:
                message = str(exc.orig).lower()
                busy = "locked" in message or "busy" in message
                if deadline is not None:
                    gave_up = time.monotonic() >= deadline
                else:
                    gave_up = attempt >= attempts - 1
                if not busy or gave_up:
                    raise StorageError(f"catalogue write failed: {exc.orig}") from exc
            pause = min(0.05 * 2**attempt, 1.0)
            if deadline is not None:
                pause = max(0.0, min(pause, deadline - time.monotonic()))
            time.sleep(pause)
            attempt += 1

    def _limit_lock_wait(self, session: Session, seconds: float) -> None:
        """Wait at most ``seconds`` for a lock in this transaction."""
        millis = max(1, int(seconds * 1000))
        if self.engine.dialect.name == "sqlite":  # reset when the connection is checked in
            session.connection().exec_driver_sql(f"PRAGMA busy_timeout={millis}")
        elif self.engine.dialect.name == "postgresql":  # ends with the transaction
            session.connection().exec_driver_sql(f"SET LOCAL lock_timeout = {millis}")
