"""Pull mode as a Prefect flow: one poll of the PACS (find new studies, retrieve them).

`triage serve` runs it every TRIAGE_PULL_INTERVAL seconds when that is set; `triage pull --once`
runs it once. The work is in ``triage.receive.pull``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from triage.receive.pull import Puller

_puller: Puller | None = None


def use_puller(puller: Puller) -> None:
    """Share the node's puller (its receiver and completion hook) with flows in this process."""
    global _puller
    _puller = puller


@flow(name="pull-new-studies", log_prints=False)
def pull_new_studies() -> dict[str, Any]:
    """Query the PACS for new studies since the watermark and retrieve those not here yet."""
    if _puller is None:
        raise RuntimeError("no puller: call flows.pull.use_puller first")
    summary = _puller.poll_once()
    return {
        "found": summary.found,
        "skipped": summary.skipped,
        "retrieved": len(summary.retrieved),
        "complete": len(summary.complete),
        "failed": len(summary.failed),
    }
