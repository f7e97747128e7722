"""The catalogue's schema level: the migrations make the tables the code declares, a fresh
database is created at the level, a shared database behind it stops start-up until
`triage db upgrade`, and one ahead of it (a newer triage) is refused."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text

from triage.catalogue import Base, Catalogue
from triage.catalogue.schema import _config, head
from triage.errors import StorageError


def _url(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> str:
    if kind == "postgresql":
        return str(request.getfixturevalue("postgres").new_database())
    return f"sqlite:///{tmp_path / 'catalogue.db'}"


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_migrations_make_exactly_the_declared_tables(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    url = _url(request, tmp_path, kind)
    Catalogue(url).close()
    engine = create_engine(url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        level = MigrationContext.configure(connection).get_current_revision()
    engine.dispose()
    assert differences == []
    assert level == head()


def _upgrade_to(url: str, level: str) -> None:
    engine = create_engine(url)
    with engine.connect() as connection:
        command.upgrade(_config(connection), level)
        connection.commit()
    engine.dispose()


def triage(*args: str, url: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRIAGE_DATABASE_URL": url, "TRIAGE_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "triage.app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_shared_database_behind_stops_start_up_until_db_upgrade(
    postgres: object, tmp_path: Path
) -> None:
    url = postgres.new_database()  # type: ignore[attr-defined]
    _upgrade_to(url, "0001")
    if head() == "0001":
        pytest.skip("only one schema level so far")
    with pytest.raises(StorageError) as refused:
        Catalogue(url)
    message = str(refused.value)
    assert "TRIAGE_DATABASE_URL" in message and "triage db upgrade" in message
    assert "0001" in message and head() in message

    status = triage("db", "status", url=url, home=tmp_path)
    assert status.returncode == 1 and "needs `triage db upgrade`" in status.stdout
    upgraded = triage("db", "upgrade", url=url, home=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"upgraded from schema level 0001 to {head()}" in upgraded.stdout
    assert "triage-test-password" not in upgraded.stdout  # the URL is shown without it
    again = triage("db", "upgrade", url=url, home=tmp_path)
    assert f"already at schema level {head()}" in again.stdout
    Catalogue(url).close()


def test_an_embedded_catalogue_behind_is_upgraded_when_opened(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalogue.db'}"
    _upgrade_to(url, "0001")
    Catalogue(url).close()
    engine = create_engine(url)
    with engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == head()
    engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_database_a_newer_triage_upgraded_is_refused(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    url = _url(request, tmp_path, kind)
    Catalogue(url).close()
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(StorageError, match="9999, which this version of triage does not know"):
        Catalogue(url)


def test_nodes_starting_together_on_an_empty_database_all_open_it(postgres: object) -> None:
    url = postgres.new_database()  # type: ignore[attr-defined]
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_it() -> None:
        start.wait()
        try:
            Catalogue(url).close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []


def test_a_wrong_password_or_port_names_the_variable_and_hides_the_password(
    postgres: object,
) -> None:
    wrong_password = postgres.url("postgres", password="not-it")  # type: ignore[attr-defined]
    with pytest.raises(StorageError) as refused:
        Catalogue(wrong_password)
    assert "TRIAGE_DATABASE_URL" in str(refused.value)
    assert "password authentication failed" in str(refused.value)
    assert "not-it" not in str(refused.value)
    nobody = "postgresql+psycopg://triage:secret@127.0.0.1:9/triage"
    with pytest.raises(StorageError, match="TRIAGE_DATABASE_URL.*Connection refused"):
        Catalogue(nobody)


def test_a_url_that_is_not_a_database_says_what_one_looks_like() -> None:
    with pytest.raises(StorageError, match="not a database URL.*postgresql\\+psycopg://"):
        Catalogue("postgres://triage@db/triage")
