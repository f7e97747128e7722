"""The one way tests wait for something to happen."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    predicate: Callable[[], object],
    timeout: float = 60.0,
    what: str = "the condition",
    *,
    interval: float = 0.05,
    detail: Callable[[], str] | None = None,
) -> None:
    """Return as soon as ``predicate()`` is true; fail after ``timeout`` seconds, saying what
    was awaited (and ``detail()``, e.g. the tail of a node's log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    message = f"timed out after {timeout}s waiting for {what}"
    raise AssertionError(message + (f":\n{detail()}" if detail is not None else ""))


def run_finished(catalogue: object, study_uid: str) -> Callable[[], bool]:
    """The node's whole triage run of the study is over, shadow models included: the node
    records the run's time (``run_s``) once the flow returns."""

    def finished() -> bool:
        timings = catalogue.study_timings().get(study_uid, {})  # type: ignore[attr-defined]
        return "run_s" in timings

    return finished
