"""The node's flow runs go without Prefect's heartbeat thread (it held each run up to 1 s
after its work), unless the operator asks for heartbeats; the flows themselves run as
before."""

from __future__ import annotations

import pytest
from prefect import flow
from prefect.settings import get_current_settings

from triage.app.runtime import without_flow_heartbeat


@flow(name="heartbeat-probe")
def probe() -> int | None:
    # what Prefect's flow engine reads to decide whether to start the heartbeat thread
    return get_current_settings().flows.heartbeat_frequency


def test_flow_runs_without_heartbeat(
    prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", raising=False)
    monkeypatch.delenv("PREFECT_RUNNER_HEARTBEAT_FREQUENCY", raising=False)
    assert probe() == 180  # Prefect's default: a heartbeat thread with every flow run
    assert without_flow_heartbeat(probe)() is None
    assert get_current_settings().flows.heartbeat_frequency == 180  # only inside the run


def test_an_operators_heartbeat_setting_is_kept(
    prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "60")
    assert without_flow_heartbeat(probe) is probe
