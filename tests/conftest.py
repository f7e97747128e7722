"""Shared fixtures: real data location, Orthanc as the PACS, one Prefect test harness."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.paths import SHARED_DATA

# Prefect: embedded API, no telemetry, quiet; set before any test imports prefect
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# the web app is off unless a test starts it on a port of its own (8080 may be taken, and
# several nodes run at once)
os.environ.setdefault("TRIAGE_WEB_PORT", "off")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real DICOM files from ../shared/data/dicom; the test skips when they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real DICOM data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One Orthanc for the session (tests clean up what they put in it by study UID)."""
    from support.orthanc import ORTHANC, Orthanc

    if ORTHANC is None:
        pytest.skip("Orthanc is not installed (Debian package orthanc)")
    pacs = Orthanc(tmp_path_factory.mktemp("orthanc"))
    pacs.start()
    yield pacs
    pacs.stop()


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test harness (a temporary embedded API) for every flow test."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def stopper() -> Iterator[list[threading.Thread]]:
    """Servers stop in the background (a stop waits up to 0.5 s for pynetdicom's poll loop);
    the module waits for them at its end."""
    stopping: list[threading.Thread] = []
    yield stopping
    for thread in stopping:
        thread.join(30)
        assert not thread.is_alive(), "a server did not stop"


@pytest.fixture(scope="module")
def prefect_api(prefect_harness: None) -> str:
    """The URL of the session's Prefect test API, for nodes started as child processes."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url, "the Prefect test harness has no API URL"
    return str(url)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration/ is an integration test (real Orthanc, dcmtk,
    dicom3tools or a node in a child process); `make unit` leaves it out."""
    root = Path(__file__).parent / "integration"
    for item in items:
        if Path(str(item.fspath)).is_relative_to(root):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def postgres() -> Iterator[object]:
    """One PostgreSQL server for the session; each test takes a database of its own
    (`postgres.new_database()`)."""
    from support.postgres import PostgreSQL, server_binaries

    if server_binaries() is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql)")
    server = PostgreSQL()
    server.start()
    yield server
    server.remove()
