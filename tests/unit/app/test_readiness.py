"""/readyz's checks against real peers: a catalogue, a folder store, a PACS (a real receiver
answering C-ECHO), and each of them gone or hanging: every check answers with a reason a person
can act on, and the whole within the overall timeout."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from support.orthanc import free_port
from support.postgres import PostgreSQL, server_binaries

from triage.app.readiness import OK, READY_SECONDS, Check, readiness_checks, run_checks
from triage.catalogue import Catalogue
from triage.config import Settings, load_settings
from triage.receive.receiver import Receiver
from triage.store import LocalStore


@pytest.fixture(autouse=True)
def no_prefect_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Prefect check is there only when PREFECT_API_URL names a server."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)


@pytest.fixture
def catalogue(tmp_path: Path) -> Iterator[Catalogue]:
    cat = Catalogue(f"sqlite:///{tmp_path / 'catalogue.db'}")
    yield cat
    cat.close()


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def settings(tmp_path: Path, **env: str) -> Settings:
    return load_settings({"TRIAGE_HOME": str(tmp_path / "home"), **env})


@pytest.fixture
def pacs(tmp_path: Path, stopper: list[threading.Thread]) -> Iterator[int]:
    """A DICOM node answering C-ECHO as PACS (the node's own receiver): its port."""
    cat = Catalogue(f"sqlite:///{tmp_path / 'pacs.db'}")
    rx = Receiver(LocalStore(tmp_path / "pacs"), cat, "PACS")
    rx.start("127.0.0.1", 0)
    yield rx.port

    def stop() -> None:
        rx.stop()
        cat.close()

    thread = threading.Thread(target=stop)
    thread.start()
    stopper.append(thread)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose peer takes the connection and then never says anything (a hung PACS)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield int(server.getsockname()[1])


def timed(checks: Mapping[str, Check], **kwargs: float) -> tuple[bool, dict[str, str], float]:
    started = time.monotonic()
    ready, answers = run_checks(checks, **kwargs)
    return ready, answers, time.monotonic() - started


def test_a_node_with_its_catalogue_and_store_is_ready(
    tmp_path: Path, catalogue: Catalogue, store: LocalStore
) -> None:
    checks = readiness_checks(settings(tmp_path), catalogue, store)
    assert set(checks) == {"catalogue", "store"}  # no PACS and no Prefect server named
    assert run_checks(checks) == (True, {"catalogue": OK, "store": OK})
    assert list(store.keys()) == []  # nothing written


def test_a_pacs_that_answers_c_echo_is_ready(
    tmp_path: Path, catalogue: Catalogue, store: LocalStore, pacs: int
) -> None:
    checks = readiness_checks(
        settings(tmp_path, TRIAGE_PACS=f"PACS@127.0.0.1:{pacs}"), catalogue, store
    )
    assert run_checks(checks) == (True, {"catalogue": OK, "store": OK, "pacs": OK})


def test_a_pacs_that_is_down_gives_a_reason(
    tmp_path: Path, catalogue: Catalogue, store: LocalStore
) -> None:
    closed = free_port()
    checks = readiness_checks(
        settings(tmp_path, TRIAGE_PACS=f"PACS@127.0.0.1:{closed}"), catalogue, store
    )
    ready, answers, took = timed(checks)
    assert not ready
    assert answers["pacs"] == (
        f"PACS@127.0.0.1:{closed}: the association was not established (not reachable, or aborted)"
    )
    assert (answers["catalogue"], answers["store"]) == (OK, OK)
    assert took < READY_SECONDS


def test_a_hanging_pacs_is_answered_within_the_timeout_and_not_asked_twice_at_once(
    tmp_path: Path, catalogue: Catalogue, store: LocalStore, silent_port: int
) -> None:
    checks = readiness_checks(
        settings(tmp_path, TRIAGE_PACS=f"PACS@127.0.0.1:{silent_port}"), catalogue, store
    )
    ready, answers, took = timed(checks, timeout=1.0)
    assert not ready
    assert answers == {"catalogue": OK, "store": OK, "pacs": "no answer within 1 s"}
    assert took < 2.0
    # the first probe still waits for the PACS: the next /readyz says so at once
    ready, answers, took = timed(checks, timeout=1.0)
    assert answers["pacs"].startswith("the last check has not returned after")
    assert took < 1.0
    # the probe itself gives up within its own bound (CHECK_SECONDS)
    time.sleep(2.5)
    ready, answers, _ = timed(checks)
    assert not ready
    assert "PACS@127.0.0.1" in answers["pacs"]
    assert "not established" in answers["pacs"]


def test_a_prefect_api_that_is_down_gives_a_reason(
    tmp_path: Path, catalogue: Catalogue, store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{free_port()}/api"
    monkeypatch.setenv("PREFECT_API_URL", url)
    checks = readiness_checks(settings(tmp_path), catalogue, store)
    ready, answers, took = timed(checks)
    assert not ready
    assert answers["prefect"].startswith(f"no Prefect API answers at PREFECT_API_URL={url} (")
    assert took < READY_SECONDS


def test_a_store_folder_that_is_gone_gives_a_reason(
    tmp_path: Path, catalogue: Catalogue, store: LocalStore
) -> None:
    store.root.rmdir()
    ready, answers = run_checks(readiness_checks(settings(tmp_path), catalogue, store))
    assert not ready
    assert answers["store"] == f"the object store folder {store.root} (TRIAGE_STORE) is not there"


@pytest.mark.skipif(server_binaries() is None, reason="PostgreSQL is not installed")
def test_a_catalogue_database_that_went_away_gives_a_reason(
    tmp_path: Path, store: LocalStore
) -> None:
    server = PostgreSQL()  # a server of its own, to stop it under the open catalogue
    server.start()
    try:
        cat = Catalogue(server.new_database())
        checks = readiness_checks(settings(tmp_path), cat, store)
        assert run_checks(checks)[0]
        server.stop()
        ready, answers, took = timed(checks)
        assert not ready
        reason = answers["catalogue"]
        assert reason.startswith(
            "cannot read the catalogue database postgresql+psycopg://triage:***@127.0.0.1:"
        )
        assert "(TRIAGE_DATABASE_URL)" in reason
        assert "triage-test-password" not in reason
        assert answers["store"] == OK
        assert took < READY_SECONDS
        cat.close()
    finally:
        server.remove()
