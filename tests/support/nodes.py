"""The node under test, started in this process the one way `triage serve` starts it
(`triage.app.node.start_node`), with the session's Prefect test harness."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from triage.app.node import TriageNode, start_node
from triage.config import load_settings


def node_env(home: Path, pacs: str = "", **extra: str) -> dict[str, str]:
    """The environment of a test node: its own home, CPU, a short quiet period and backoff;
    ``extra`` adds or overrides TRIAGE_* variables (keyword ``QUIET_SECONDS`` for
    ``TRIAGE_QUIET_SECONDS``, and so on)."""
    env = {
        "TRIAGE_HOME": str(home),
        "TRIAGE_PACS": pacs,
        "TRIAGE_QUIET_SECONDS": "1.5",
        "TRIAGE_DEVICE": "cpu",
        "TRIAGE_DELIVERY_BACKOFF_SECONDS": "1",
    }
    env.update({f"TRIAGE_{key}": value for key, value in extra.items()})
    return env


@contextmanager
def running_node(env: dict[str, str], poll_seconds: float = 0.2) -> Iterator[TriageNode]:
    """A started node; listening on a free port unless ``env`` names TRIAGE_PORT. Needs the
    ``prefect_harness`` fixture."""
    settings = load_settings(env)
    if "TRIAGE_PORT" not in env:
        settings = dataclasses.replace(settings, port=0)
    node = start_node(settings, poll_seconds=poll_seconds, warm_up=False)
    try:
        yield node
    finally:
        node.stop()
