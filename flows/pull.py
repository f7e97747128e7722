"""Pull mode as a Prefect flow: one poll of the PACS (find new studies, retrieve them).

`triage serve` runs it every TRIAGE_PULL_INTERVAL seconds when that is set; `triage pull --once`
runs it once. The work is in ``triage.receive.pull``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from triage.app.services import node_services


@flow(name="pull-new-studies", log_prints=False)
def pull_new_studies() -> dict[str, Any]:
    """Query the PACS for new studies since the watermark and retrieve those not here yet."""
    puller = node_services().puller
    if puller is None:
        raise RuntimeError("pull mode is not set up in this process (TRIAGE_PULL_INTERVAL)")
    summary = puller.poll_once()
    return {
        "found": summary.found,
        "skipped": summary.skipped,
        "retrieved": len(summary.retrieved),
        "complete": len(summary.complete),
        "failed": len(summary.failed),
    }
