"""`triage db ...`: the catalogue database's schema level, and its upgrade.

An upgrade is an operator's step on a shared (PostgreSQL) catalogue: stop the nodes of the old
version, run `triage db upgrade` once, start the new version (docs/operations.md). The embedded
SQLite catalogue is upgraded by the node itself when it opens it.
"""

from __future__ import annotations

import typer
from rich.console import Console

from triage.config import Settings, load_settings

db_app = typer.Typer(
    help="The catalogue database: its schema level and upgrade.", no_args_is_help=True
)
console = Console()


@db_app.command()
def upgrade() -> None:
    """Bring the catalogue (TRIAGE_DATABASE_URL) to the schema level this version needs."""
    from triage.catalogue.database import shown_url, with_engine
    from triage.catalogue.schema import upgrade as upgrade_schema

    settings = _settings()
    before, after = with_engine(settings.database_url, upgrade_schema)
    where = shown_url(settings.database_url)
    if before == after:
        console.print(f"{where}: already at schema level {after}")
    else:
        console.print(f"{where}: upgraded from schema level {before or 'none'} to {after}")


_VERDICTS = {
    "current": "up to date",
    "empty": "empty: the first node to start creates the schema",
    "newer": "newer than this version of triage",
    "behind": "needs `triage db upgrade`",
}


@db_app.command()
def status() -> None:
    """Say which schema level the catalogue is at and which this version needs."""
    from triage.catalogue.database import shown_url, with_engine
    from triage.catalogue.schema import Standing, head, level_of

    settings = _settings()
    found = with_engine(settings.database_url, level_of)
    console.print(
        f"{shown_url(settings.database_url)}: schema level {found.level or 'none'}; "
        f"this version needs {head()} ({_VERDICTS[found.standing]})"
    )
    if found.standing in (Standing.BEHIND, Standing.NEWER):
        raise typer.Exit(1)


def _settings() -> Settings:
    settings = load_settings()
    settings.home.mkdir(parents=True, exist_ok=True)  # the embedded catalogue's folder
    return settings
