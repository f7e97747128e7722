"""Pull mode in the running node and from the command line, against Orthanc as the PACS: studies
stored into Orthanc are found, retrieved, triaged and their SR is back in Orthanc, once."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from support.orthanc import ORTHANC, Orthanc, free_port, srs_in_orthanc
from support.waiting import wait_until

from triage.app.demo import write_demo_studies
from triage.config import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Orthanc, int]]:
    if ORTHANC is None:
        pytest.skip("Orthanc is not installed (Debian package orthanc)")
    port = free_port()
    orthanc = Orthanc(tmp_path_factory.mktemp("pull-node-pacs"))
    orthanc.start(modalities={"TRIAGE": ("TRIAGE", "127.0.0.1", port)})
    yield orthanc, port
    orthanc.stop()


def _into_pacs(orthanc: Orthanc, folder: Path) -> None:
    orthanc.store([pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))])


def test_the_node_pulls_triages_and_reports_back(
    pacs: tuple[Orthanc, int], tmp_path: Path, prefect_harness: None
) -> None:
    from triage.app.node import start_node

    orthanc, port = pacs
    studies = write_demo_studies(
        tmp_path / "studies", count=2, seed=5, shape=(128, 128, 24), spacing=(1.8, 1.8, 5.0)
    )
    for study in studies:
        _into_pacs(orthanc, study.folder)
    env = {
        "TRIAGE_HOME": str(tmp_path / "home"),
        "TRIAGE_PORT": str(port),
        "TRIAGE_PACS": orthanc.node,
        "TRIAGE_PULL_INTERVAL": "1",
        # long: a pulled study must not wait for it (NumberOfStudyRelatedInstances says when
        # it is complete); only the unanalysable study without a count would
        "TRIAGE_QUIET_SECONDS": "120",
        "TRIAGE_DEVICE": "cpu",
        "TRIAGE_DELIVERY_BACKOFF_SECONDS": "1",
    }
    node = start_node(load_settings(env), poll_seconds=0.2, warm_up=False)
    svc = node.svc
    puller = svc.puller
    assert puller is not None
    try:
        analysable = [s for s in studies if s.analysable]

        def reported() -> bool:
            return all(len(srs_in_orthanc(orthanc, s.study_instance_uid)) == 1 for s in analysable)

        wait_until(reported, 240, "every pulled study's SR in Orthanc")
        for study in studies:
            files = len(list(study.folder.glob("*.dcm")))
            assert svc.catalogue.instance_count(study.study_instance_uid) == files
        stored = node.receiver.stats.stored
        polls_before = puller.last_summary
        wait_until(lambda: puller.last_summary is not polls_before, 30, "another poll")
        wait_until(lambda: puller.last_summary is not polls_before, 30, "a third poll")
        assert node.receiver.stats.stored == stored  # nothing retrieved twice
        assert node.receiver.stats.duplicates == 0
        for study in analysable:  # still exactly one SR each, in the same study
            assert len(srs_in_orthanc(orthanc, study.study_instance_uid)) == 1
    finally:
        node.stop()
        svc.close()


def test_pull_once_from_the_command_line_by_c_get(
    pacs: tuple[Orthanc, int], tmp_path: Path
) -> None:
    orthanc, _ = pacs
    (study,) = write_demo_studies(
        tmp_path / "studies", count=1, seed=9, shape=(64, 64, 20), unanalysable=0
    )
    _into_pacs(orthanc, study.folder)
    env = {
        **os.environ,
        "TRIAGE_HOME": str(tmp_path / "home"),
        "TRIAGE_PACS": orthanc.node,
        "TRIAGE_AE_TITLE": "TRIAGE",
        "TRIAGE_PULL_RETRIEVE": "c-get",
        "TRIAGE_PORT": str(free_port()),
    }
    run: Any = subprocess.run(
        [sys.executable, "-m", "triage.app.cli", "pull", "--once"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr
    assert "retrieved" in run.stdout
    settings = dataclasses.replace(load_settings(env))
    from triage.catalogue import Catalogue

    files = len(list(study.folder.glob("*.dcm")))
    assert Catalogue(settings.database_url).instance_count(study.study_instance_uid) == files
    again = subprocess.run(
        [sys.executable, "-m", "triage.app.cli", "pull", "--once"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert again.returncode == 0, again.stderr
    assert "0 retrieved" in again.stdout
