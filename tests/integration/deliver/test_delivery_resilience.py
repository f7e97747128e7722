"""Delivery survives the PACS: Orthanc down while a result is ready, then back; dead letter and
operator retry. Real Orthanc, real storescu, the real node and flows."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.modality import storescu
from support.orthanc import ORTHANC, Orthanc, free_port, srs_in_orthanc
from support.waiting import wait_until

from triage.app.demo import write_demo_studies
from triage.config import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[Orthanc]:
    if ORTHANC is None:
        pytest.skip("Orthanc is not installed")
    down = Orthanc(
        tmp_path / "pacs", ae_title="LATEPACS", dicom_port=free_port(), http_port=free_port()
    )
    yield down  # not started: the test starts it when it wants the PACS back
    down.stop()


def test_results_wait_for_the_pacs_and_are_delivered_once(
    tmp_path: Path, pacs: Orthanc, prefect_harness: None
) -> None:
    from triage.app.node import start_node
    from triage.catalogue import DEAD, DELIVERED, PENDING
    from triage.deliver.outbox import retry_dead

    env = {
        "TRIAGE_HOME": str(tmp_path / "home"),
        "TRIAGE_PACS": pacs.node,
        "TRIAGE_QUIET_SECONDS": "1",
        "TRIAGE_DEVICE": "cpu",
        "TRIAGE_DELIVERY_BACKOFF_SECONDS": "0.5",
        "TRIAGE_DELIVERY_MAX_TRIES": "50",
    }
    settings = dataclasses.replace(load_settings(env), port=0)
    node = start_node(settings, poll_seconds=0.2, warm_up=False)
    svc = node.svc
    try:
        (study,) = write_demo_studies(
            tmp_path / "studies",
            count=1,
            unanalysable=0,
            shape=(128, 128, 24),
            spacing=(1.8, 1.8, 5.0),
        )
        assert storescu(study.folder, node.port).returncode == 0
        uid = study.study_instance_uid

        def sr_rows(*states: str) -> list[Any]:
            return [r for r in svc.catalogue.deliveries(list(states)) if r.kind == "sr"]

        def failed_at_least_twice() -> bool:
            rows = sr_rows()
            return len(rows) == 1 and rows[0].attempts >= 2

        wait_until(failed_at_least_twice, 90, "two failed delivery attempts")
        (row,) = sr_rows()
        assert row.state == PENDING and "LATEPACS" in (row.last_error or "")
        (listed,) = [r for r in svc.catalogue.worklist() if r.study_instance_uid == uid]
        assert listed.state == "triaged"  # the priority is on the worklist while the SR waits

        pacs.start()
        wait_until(lambda: sr_rows(DELIVERED) != [], 60, "delivery")
        assert len(srs_in_orthanc(pacs, uid)) == 1

        # the PACS goes away for longer than the retry budget: the next study's SR is
        # dead-lettered, then an operator retries it (a re-run of the same study would send
        # nothing: the same result is the same SR, already in the PACS)
        pacs.stop()
        svc.settings = dataclasses.replace(svc.settings, delivery_max_tries=2)
        (later,) = write_demo_studies(
            tmp_path / "later",
            count=1,
            unanalysable=0,
            shape=(128, 128, 24),
            spacing=(1.8, 1.8, 5.0),
            seed=8,
        )
        assert storescu(later.folder, node.port).returncode == 0
        wait_until(lambda: sr_rows(DEAD) != [], 90, "the dead letter")
        cli_env = {**os.environ, **env}
        listing = subprocess.run(
            [sys.executable, "-m", "triage.app.cli", "outbox", "list", "--json"],
            capture_output=True,
            text=True,
            env=cli_env,
            timeout=60,
            check=True,
        )
        dead_rows = [d for d in json.loads(listing.stdout) if d["state"] == DEAD]
        (dead,) = [d for d in dead_rows if d["kind"] == "sr"]
        assert dead["attempts"] == 2
        assert dead["study_instance_uid"] == later.study_instance_uid

        pacs.start()
        assert retry_dead(svc.catalogue) == len(dead_rows)  # the SR, and a positive's KOS
        wait_until(lambda: len(sr_rows(DELIVERED)) == 2, 60, "the redelivery")
        assert len(srs_in_orthanc(pacs, uid)) == 1
        assert len(srs_in_orthanc(pacs, later.study_instance_uid)) == 1
    finally:
        node.stop()
