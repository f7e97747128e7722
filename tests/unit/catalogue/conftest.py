"""The catalogue under test: the embedded SQLite one and a real PostgreSQL, for every test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from triage.catalogue import Catalogue


@pytest.fixture(params=["sqlite", "postgresql"])
def cat(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalogue]:
    """The same behaviour on the embedded SQLite catalogue and on a real PostgreSQL."""
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres").new_database()
    else:
        url = f"sqlite:///{tmp_path / 'catalogue.db'}"
    catalogue = Catalogue(url)
    yield catalogue
    catalogue.close()
