"""`triage outbox`: what waits to be delivered (SRs, KOS, SEG, HL7, notifications), its
retries and its dead letters."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console

from triage.config import load_settings

outbox_app = typer.Typer(
    help="The outbox: results and notifications waiting for the PACS, the RIS or a person.",
    no_args_is_help=True,
)
console = Console()
errors = Console(stderr=True)


@outbox_app.command("list")
def outbox_list(
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List the outbox (SRs, KOS, SEG, HL7, notifications): state, tries and last error."""
    from triage.catalogue import Catalogue
    from triage.report.destinations import as_shown

    rows = as_shown(Catalogue(load_settings().database_url).deliveries())
    if as_json:
        sys.stdout.write(
            json.dumps(
                [{**vars(r), "next_attempt_at": r.next_attempt_at.isoformat()} for r in rows],
                indent=2,
            )
            + "\n"
        )
        return
    for r in rows:
        console.print(
            f"{r.id:5} {r.kind:6} {r.state:9} tries={r.attempts:<3} {r.destination} "
            f"{r.sop_instance_uid} {r.last_error or ''}"
        )


@outbox_app.command("retry")
def outbox_retry() -> None:
    """Queue every dead-lettered SR again (after the PACS is back)."""
    from triage.catalogue import Catalogue
    from triage.deliver.outbox import retry_dead

    count = retry_dead(Catalogue(load_settings().database_url))
    console.print(f"{count} delivery(ies) queued again")


@outbox_app.command("drop")
def outbox_drop(
    ids: Annotated[list[int], typer.Argument(help="Outbox ids (from `triage outbox list`).")],
) -> None:
    """Remove dead-lettered items for good (e.g. a result the PACS must never get)."""
    from triage.catalogue import Catalogue

    catalogue = Catalogue(load_settings().database_url)
    dropped = catalogue.drop_dead_deliveries(ids)
    missing = sorted(set(ids) - set(dropped))
    console.print(f"{len(dropped)} delivery(ies) dropped")
    if missing:
        errors.print(f"not dropped (unknown, or not dead: retry or wait for them): {missing}")
        raise typer.Exit(1)
