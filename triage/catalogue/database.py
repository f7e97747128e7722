"""The catalogue's database: the engine, sessions, transactions that wait out a locked
database (within bounds), the SQLite tuning; its schema level is `triage.catalogue.schema`'s.

``Database`` is the base every part of the ``Catalogue`` builds on (``receiving``, ``studies``,
``outbox``, ``worklist``): each part reads in ``session()`` and writes in ``transaction()``.
SQLAlchemy over SQLite by default; nothing here is SQLite-specific beyond connection tuning, so
the same schema runs on PostgreSQL when several machines share the work.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

from sqlalchemy import create_engine, event, make_url
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, InterfaceError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from triage.catalogue.schema import ensure_current
from triage.errors import StorageError

T = TypeVar("T")

# How long one transaction waits for another's lock on SQLite before "database is locked"
BUSY_TIMEOUT_SECONDS = 30
# How long the receiver's catalogue write waits for a locked database, all tries together,
# before it gives up and the C-STORE is answered 0xA700: below the DIMSE timeouts of common
# senders (Orthanc 10 s, pynetdicom 30 s), so the sender hears a status it retries on instead
# of timing out and aborting the association.
RECORD_LOCK_WAIT_SECONDS = 8.0


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


def shown_url(url: str) -> str:
    """The URL as a message may show it: without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a database URL)"


def open_engine(url: str) -> Engine:
    """The SQLAlchemy engine of a catalogue URL (SQLite tuned for a node's concurrent writes;
    other databases checked on every checkout, so one that restarted is reconnected to)."""
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_SECONDS})
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "checkin", _reset_busy_timeout)
            return engine
        return create_engine(url, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise StorageError(
            f"TRIAGE_DATABASE_URL {shown_url(url)} is not a database URL this node can use "
            f"({exc}); e.g. sqlite:////var/lib/triage/catalogue.db or "
            "postgresql+psycopg://triage@db.example.org/triage"
        ) from exc


def with_engine(url: str, work: Callable[[Engine], T]) -> T:
    """Run ``work`` on an engine of its own for ``url`` (a command's one look at the
    database), disposed afterwards; a database that cannot be reached is a StorageError that
    names TRIAGE_DATABASE_URL."""
    engine = open_engine(url)
    try:
        return work(engine)
    except (OperationalError, InterfaceError) as exc:
        raise unreachable(url, exc) from exc
    finally:
        engine.dispose()


def unreachable(url: str, exc: OperationalError | InterfaceError) -> StorageError:
    return StorageError(
        f"cannot open the catalogue database {shown_url(url)} (TRIAGE_DATABASE_URL): {exc.orig}"
    )


class Database:
    """An open catalogue database (at this version's schema level: `schema.ensure_current`),
    and its transactions."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = open_engine(url)
        try:
            ensure_current(self.engine)
        except (OperationalError, InterfaceError) as exc:
            raise unreachable(url, exc) from exc
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
        return self._retrying(self.session, work, attempts, deadline)

    def write(self, work: Callable[[Connection], T], deadline: float | None = None) -> T:
        """``transaction`` on a Core connection instead of an ORM session: for the writes made
        for every received instance, where a session's set-up costs more than the work."""
        return self._retrying(self.engine.begin, work, 5, deadline)

    def _retrying(
        self,
        begin: Callable[[], AbstractContextManager[Any]],
        work: Callable[[Any], T],
        attempts: int,
        deadline: float | None,
    ) -> T:
        if deadline is None and self.lock_wait_seconds is not None:
            deadline = time.monotonic() + self.lock_wait_seconds
        attempt = 0
        while True:
            try:
                with begin() as handle:
                    if deadline is not None:
                        self._limit_lock_wait(handle, deadline - time.monotonic())
                    return work(handle)
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

    def _limit_lock_wait(self, handle: Session | Connection, seconds: float) -> None:
        """Wait at most ``seconds`` for a lock in this transaction."""
        millis = max(1, int(seconds * 1000))
        conn = handle.connection() if isinstance(handle, Session) else handle
        if self.engine.dialect.name == "sqlite":  # reset when the connection is checked in
            conn.exec_driver_sql(f"PRAGMA busy_timeout={millis}")
        elif self.engine.dialect.name == "postgresql":  # ends with the transaction
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {millis}")
