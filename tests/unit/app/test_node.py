"""The node's threads: no flow runs before the warm-up is over; a failing run is not silent."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

from triage.app.node import TriageNode
from triage.app.services import Services
from triage.catalogue import InstanceRecord
from triage.config import load_settings


def _services(tmp_path: Path) -> Services:
    settings = load_settings(
        {"TRIAGE_HOME": str(tmp_path), "TRIAGE_QUIET_SECONDS": "0.1", "TRIAGE_DEVICE": "cpu"}
    )
    return Services.open(dataclasses.replace(settings, port=0))


def _receive_one(svc: Services, study: str) -> None:
    svc.catalogue.record_instance(
        InstanceRecord(
            study,
            f"{study}.1",
            f"{study}.1.1",
            "1.2.840.10008.5.1.4.1.1.2",
            "1.2.840.10008.1.2.1",
            f"raw/{study}/x.dcm",
            1,
        )
    )


def test_no_study_runs_before_the_warm_up_is_over(tmp_path: Path) -> None:
    svc = _services(tmp_path)
    warmed = threading.Event()
    seen: list[bool] = []

    def warm_up() -> None:
        time.sleep(1.0)
        warmed.set()

    node = TriageNode(
        svc,
        run_study=lambda uid, gen: seen.append(warmed.is_set()),
        warm_up=warm_up,
        poll_seconds=0.05,
    )
    _receive_one(svc, "1.2.3")
    node.start()
    try:
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        node.stop()
        svc.close()
    assert seen == [True]


def test_a_failing_run_leaves_the_study_not_analysed_with_a_reason(tmp_path: Path) -> None:
    svc = _services(tmp_path)

    def broken(uid: str, generation: int) -> None:
        raise RuntimeError("boom")

    node = TriageNode(svc, run_study=broken, poll_seconds=0.05)
    _receive_one(svc, "1.2.4")
    node.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            state = svc.catalogue.study_state("1.2.4")
            if state and state[0] == "not analysed":
                break
            time.sleep(0.05)
        (row,) = svc.catalogue.worklist()
    finally:
        node.stop()
        svc.close()
    assert row.state == "not analysed" and row.priority == "not analysed"
    assert "RuntimeError" in (row.reason or "") and "triage rerun" in (row.reason or "")
