"""The node on a real PostgreSQL catalogue that goes away and comes back: while it is down the
receiver answers a failure status the sender retries on (never a false success), and when it
is back the node carries on - reconnected, the next study triaged, one SR each in Orthanc."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.modality import storescu
from support.nodes import node_env, running_node
from support.orthanc import Orthanc, srs_in_orthanc
from support.postgres import PostgreSQL, server_binaries
from support.waiting import wait_until

from triage.app.demo import write_demo_studies


@pytest.fixture
def database() -> Iterator[PostgreSQL]:
    """A PostgreSQL of this test's own: it is stopped and started again."""
    if server_binaries() is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql)")
    server = PostgreSQL()
    server.start()
    yield server
    server.remove()


def test_a_restarted_database_is_reconnected_and_nothing_is_falsely_acknowledged(
    tmp_path: Path, database: PostgreSQL, orthanc: Orthanc, prefect_harness: None
) -> None:
    first, second = write_demo_studies(
        tmp_path / "studies", 2, unanalysable=0, shape=(64, 64, 16), spacing=(3.6, 3.6, 5.0)
    )
    env = node_env(tmp_path / "home", orthanc.node, DATABASE_URL=database.new_database())
    with running_node(env) as node:
        sent = storescu(first.folder, node.port)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        wait_until(lambda: srs_in_orthanc(orthanc, first.study_instance_uid), 120, "the 1st SR")

        database.stop()
        refused = storescu(second.folder, node.port)
        answers = refused.stdout + refused.stderr
        # 0xA700: the modality keeps the images and sends them again
        assert "Received Store Response (Refused: OutOfResources)" in answers, answers[-3000:]
        assert "Received Store Response (Success)" not in answers

        database.start()
        assert node.svc.catalogue.study_state(second.study_instance_uid) is None
        resent = storescu(second.folder, node.port)  # the modality's retry
        assert resent.returncode == 0, resent.stdout + resent.stderr
        assert "OutOfResources" not in resent.stdout + resent.stderr
        wait_until(lambda: srs_in_orthanc(orthanc, second.study_instance_uid), 120, "the 2nd SR")
    assert len(srs_in_orthanc(orthanc, first.study_instance_uid)) == 1
    assert len(srs_in_orthanc(orthanc, second.study_instance_uid)) == 1
