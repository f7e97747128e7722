"""What an admin may change through the web app or the API - re-run a study, accept a held
downgrade, send dead-lettered outbox items again or drop them - each checked and audited the
same way whichever door it came through."""

from __future__ import annotations

from triage.catalogue import Catalogue
from triage.deliver.outbox import retry_dead
from triage.errors import StorageError, TriageError
from triage.worklist.auth import Caller, require


class NotFound(TriageError):
    """The study or outbox item named does not exist."""


def rerun(catalogue: Catalogue, caller: Caller, study_uid: str, client: str) -> str:
    require(caller, "admin")
    if not catalogue.reopen(study_uid):
        raise NotFound(f"study {study_uid} is not in the catalogue")
    catalogue.record_access(caller.name, "rerun", study_uid, client)
    return "queued: the study is triaged again after the quiet period"


def acknowledge(
    catalogue: Catalogue, caller: Caller, study_uid: str, reason: str, client: str
) -> str:
    """Accept the study's held lower priority (as `triage ack`, by the logged-in person)."""
    require(caller, "admin")
    try:
        done = catalogue.acknowledge(study_uid, who=caller.name, reason=reason)
    except StorageError as exc:
        raise TriageError(str(exc)) from exc
    catalogue.record_access(
        caller.name, "ack", study_uid, client, f"{done.from_priority} -> {done.to_priority}"
    )
    return f"{done.from_priority} -> {done.to_priority}, accepted by {done.who}"


def retry_outbox(catalogue: Catalogue, caller: Caller, client: str) -> str:
    require(caller, "admin")
    count = retry_dead(catalogue)
    catalogue.record_access(caller.name, "outbox retry", client=client, detail=f"{count} item(s)")
    return f"{count} dead-lettered item(s) queued again"


def drop_outbox(catalogue: Catalogue, caller: Caller, ids: list[int], client: str) -> str:
    require(caller, "admin")
    dropped = catalogue.drop_dead_deliveries(ids)
    if not dropped:
        raise NotFound(f"no dead-lettered outbox item among {ids} (only dead ones can be dropped)")
    catalogue.record_access(caller.name, "outbox drop", client=client, detail=f"ids {dropped}")
    return f"{len(dropped)} item(s) dropped"
