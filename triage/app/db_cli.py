"""`triage db ...`: the catalogue database's schema level, and its upgrade.

An upgrade is an operator's step on a shared (PostgreSQL) catalogue: stop the nodes of the old
version, run `triage db upgrade` once, start the new version (docs/operations.md). The embedded
SQLite catalogue is upgraded by the node itself when it opens it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console

from triage.config import load_settings

db_app = typer.Typer(
    help="The catalogue database: its schema level and upgrade.", no_args_is_help=True
)
console = Console()
T = TypeVar("T")


@db_app.command()
def upgrade() -> None:
    """Bring the catalogue (TRIAGE_DATABASE_URL) to the schema level this version needs."""
    from triage.catalogue.database import open_engine, shown_url
    from triage.catalogue.schema import upgrade as upgrade_schema

    settings = load_settings()
    settings.home.mkdir(parents=True, exist_ok=True)  # the embedded catalogue's folder
    engine = open_engine(settings.database_url)
    try:
        before, after = _answering(settings.database_url, lambda: upgrade_schema(engine))
    finally:
        engine.dispose()
    where = shown_url(settings.database_url)
    if before == after:
        console.print(f"{where}: already at schema level {after}")
    else:
        console.print(f"{where}: upgraded from schema level {before or 'none'} to {after}")


@db_app.command()
def status() -> None:
    """Say which schema level the catalogue is at and which this version needs."""
    from triage.catalogue.database import open_engine, shown_url
    from triage.catalogue.schema import current, head, is_empty, known

    settings = load_settings()
    settings.home.mkdir(parents=True, exist_ok=True)  # the embedded catalogue's folder
    engine = open_engine(settings.database_url)
    try:

        def read() -> tuple[str | None, bool]:
            with engine.connect() as connection:
                return current(connection), is_empty(connection)

        level, empty = _answering(settings.database_url, read)
    finally:
        engine.dispose()
    if level == head():
        verdict = "up to date"
    elif empty:
        verdict = "empty: the first node to start creates the schema"
    elif level is not None and not known(level):
        verdict = "newer than this version of triage"
    else:
        verdict = "needs `triage db upgrade`"
    console.print(
        f"{shown_url(settings.database_url)}: schema level {level or 'none'}; "
        f"this version needs {head()} ({verdict})"
    )
    if verdict.startswith("needs") or verdict.startswith("newer"):
        raise typer.Exit(1)


def _answering(url: str, work: Callable[[], T]) -> T:
    from sqlalchemy.exc import InterfaceError, OperationalError

    from triage.catalogue.database import shown_url
    from triage.errors import StorageError

    try:
        return work()
    except (OperationalError, InterfaceError) as exc:
        raise StorageError(
            f"cannot reach the catalogue database {shown_url(url)} (TRIAGE_DATABASE_URL): "
            f"{exc.orig}"
        ) from exc
