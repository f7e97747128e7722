"""The JSON API: the worklist (the items of `triage worklist --json`), one study, and the
admins' changes; described by OpenAPI at /api/openapi.json. Same accounts as the pages, by
HTTP basic auth or the session."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from triage.report.destinations import as_shown
from triage.worklist import actions
from triage.worklist.auth import Caller, check_change, client_of, require
from triage.worklist.context import NO_STORE, WebContext
from triage.worklist.view import worklist_json

router = APIRouter(prefix="/api", tags=["worklist"])


class Acknowledgement(BaseModel):
    reason: str = Field(description="Why the lower priority is right (audited)")


class Done(BaseModel):
    detail: str


def _context(request: Request) -> WebContext:
    context: WebContext = request.app.state.context
    return context


def _for(caller: Caller, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Shadow results are for engineers and admins: a clinician's items have none."""
    if caller.may("engineer"):
        return items
    return [{**item, "shadow_findings": []} for item in items]


@router.get("/worklist", summary="Every study, urgent first, then by arrival")
def get_worklist(request: Request) -> JSONResponse:
    """The items of `triage worklist --json`, in the same order."""
    context = _context(request)
    caller = context.caller(request)
    return JSONResponse(_for(caller, worklist_json(context.catalogue.worklist())), headers=NO_STORE)


@router.get("/studies/{study_uid}", summary="One study: its worklist item, timeline, delivery")
def get_study(request: Request, study_uid: str) -> JSONResponse:
    context = _context(request)
    caller = context.caller(request)
    rows = context.catalogue.worklist(study_uid)
    timeline = context.catalogue.timeline(study_uid)
    if not rows or timeline is None:
        return JSONResponse({"detail": f"study {study_uid} is not in the catalogue"}, 404)
    context.catalogue.record_access(caller.name, "view study", study_uid, client_of(request))
    (item,) = _for(caller, worklist_json(rows))

    def at(when: Any) -> str | None:
        return when.isoformat() + "Z" if when else None

    item["timeline"] = {
        "received_at": at(timeline.received_at),
        "last_instance_at": at(timeline.last_instance_at),
        "triaged_at": at(timeline.triaged_at),
        "delivered_at": at(timeline.delivered_at),
        "timings": timeline.timings,
    }
    item["deliveries"] = [
        {
            "id": d.id,
            "kind": d.kind,
            "destination": d.destination,
            "state": d.state,
            "attempts": d.attempts,
            "last_error": d.last_error,
        }
        for d in as_shown(context.catalogue.deliveries(study_uid=study_uid))
    ]
    return JSONResponse(item, headers=NO_STORE)


@router.post("/studies/{study_uid}/rerun", summary="Triage the study again (admin)")
async def post_rerun(request: Request, study_uid: str) -> Done:
    context = _context(request)
    caller = context.caller(request)
    await check_change(request, caller)
    return Done(detail=actions.rerun(context.catalogue, caller, study_uid, client_of(request)))


@router.post("/studies/{study_uid}/ack", summary="Accept the held lower priority (admin)")
async def post_ack(request: Request, study_uid: str, body: Acknowledgement) -> Done:
    context = _context(request)
    caller = context.caller(request)
    await check_change(request, caller)
    text = actions.acknowledge(
        context.catalogue, caller, study_uid, body.reason, client_of(request)
    )
    return Done(detail=text)


@router.get("/outbox", summary="Every outbox item and its state (admin)")
def get_outbox(request: Request) -> JSONResponse:
    context = _context(request)
    caller = context.caller(request)
    require(caller, "admin")
    rows = as_shown(context.catalogue.deliveries())
    return JSONResponse(
        [{**vars(r), "next_attempt_at": r.next_attempt_at.isoformat() + "Z"} for r in rows]
    )


@router.post("/outbox/retry", summary="Send every dead-lettered item again (admin)")
async def post_outbox_retry(request: Request) -> Done:
    context = _context(request)
    caller = context.caller(request)
    await check_change(request, caller)
    return Done(detail=actions.retry_outbox(context.catalogue, caller, client_of(request)))


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request) -> JSONResponse:
    _context(request).caller(request)
    return JSONResponse(request.app.openapi())


@router.get("/docs", include_in_schema=False)
def docs(request: Request) -> Response:
    context = _context(request)
    caller = context.caller(request)
    schema = request.app.openapi()
    endpoints = [
        (method.upper(), path, op.get("summary", ""))
        for path, methods in schema.get("paths", {}).items()
        for method, op in methods.items()
    ]
    return context.page(request, "api_docs.html", caller=caller, page="api", endpoints=endpoints)
