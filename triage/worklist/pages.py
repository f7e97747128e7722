"""The pages: log in and out, the worklist (live), a study, the models, the outbox."""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from typing import TYPE_CHECKING, Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from triage.catalogue import WorklistRow, utcnow
from triage.errors import TriageError
from triage.report.destinations import as_shown
from triage.results import StudyState
from triage.worklist import actions
from triage.worklist.auth import (
    COOKIE,
    LOGIN_CSRF_COOKIE,
    authenticate,
    check_change,
    client_of,
    require,
)
from triage.worklist.context import NO_STORE, WebContext
from triage.worklist.presenting import PERIODS, matches, row_view, timeline_entries

if TYPE_CHECKING:
    from triage.worklist.key_image import KeyImage

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

REFRESH_SECONDS = 4


def _context(request: Request) -> WebContext:
    context: WebContext = request.app.state.context
    return context


def _secure(request: Request, context: WebContext) -> bool:
    return request.url.scheme == "https" or context.settings.web_address.startswith("https")


def _safe_next(target: str) -> str:
    """Only a path of this site: never a redirect to somewhere else after the login."""
    return target if target.startswith("/") and not target.startswith("//") else "/worklist"


@router.get("/login")
def login_form(request: Request, next: str = "/worklist") -> Response:
    context = _context(request)
    token = secrets.token_urlsafe(24)
    response = context.page(request, "login.html", login_csrf=token, next=_safe_next(next))
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=_secure(request, context),
        max_age=3600,
    )
    return response


@router.post("/login")
def login(
    request: Request,
    name: Annotated[str, Form()],
    password: Annotated[str, Form()],
    csrf_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/worklist",
) -> Response:
    context = _context(request)
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not secrets.compare_digest(expected, csrf_token):
        return context.page(
            request,
            "login.html",
            error="the login form was out of date: try again",
            login_csrf=expected or "",
            next=_safe_next(next),
        )
    client = client_of(request)
    if authenticate(context.catalogue, name, password, client) is None:
        page = context.page(
            request,
            "login.html",
            error="wrong name or password",
            login_csrf=expected,
            next=_safe_next(next),
        )
        page.status_code = 401
        return page
    token, _ = context.catalogue.start_session(name, context.settings.web_session_hours)
    context.catalogue.record_access(name, "login", client=client)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="lax",  # lax: a link in a notification e-mail opens the page logged in
        secure=_secure(request, context),
        max_age=int(context.settings.web_session_hours * 3600),
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    context = _context(request)
    caller = context.caller(request)
    await check_change(request, caller)
    token = request.cookies.get(COOKIE)
    if token:
        context.catalogue.end_session(token)
    context.catalogue.record_access(caller.name, "logout", client=client_of(request))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


@router.get("/")
def home() -> Response:
    return RedirectResponse("/worklist", status_code=303)


def _filtered(request: Request, modality: str, state: str, hours: int) -> list[object]:
    context = _context(request)
    now = utcnow()
    return [
        row_view(r, now)
        for r in context.catalogue.worklist()
        if matches(r, modality, state, hours, now)
    ]


@router.get("/worklist")
def worklist(request: Request, modality: str = "", state: str = "", hours: int = 0) -> Response:
    context = _context(request)
    caller = context.caller(request)
    rows = context.catalogue.worklist()
    modalities = sorted({m for r in rows for m in r.modality.split("/") if m})
    query = f"modality={quote(modality)}&state={quote(state)}&hours={hours}"
    return context.page(
        request,
        "worklist.html",
        caller=caller,
        page="worklist",
        rows=_filtered(request, modality, state, hours),
        rows_url=f"/worklist/rows?{query}",
        modalities=modalities,
        states=[s.value for s in StudyState] + ["urgent", "routine", "pending"],
        periods=PERIODS,
        filters={"modality": modality, "state": state, "hours": hours},
        now=utcnow().strftime("%H:%M:%S UTC"),
        refresh_seconds=REFRESH_SECONDS,
    )


@router.get("/worklist/rows")
def worklist_rows(
    request: Request, modality: str = "", state: str = "", hours: int = 0
) -> Response:
    """The worklist table's rows alone: what the page fetches to stay current."""
    context = _context(request)
    context.caller(request)
    return context.templates.TemplateResponse(
        request,
        "worklist_rows.html",
        {"rows": _filtered(request, modality, state, hours)},
        headers=NO_STORE,
    )


@router.get("/studies/{study_uid}")
def study(request: Request, study_uid: str) -> Response:
    context = _context(request)
    caller = context.caller(request)
    found = context.catalogue.worklist(study_uid)
    timeline = context.catalogue.timeline(study_uid)
    if not found or timeline is None:
        return HTMLResponse("No such study in the catalogue.", status_code=404)
    row = found[0]
    context.catalogue.record_access(caller.name, "view study", study_uid, client_of(request))
    settings = context.settings
    made = _key_image(context, row, caller.may("engineer"))
    return context.page(
        request,
        "study.html",
        caller=caller,
        page="study",
        row=row_view(row),
        findings=sorted(row.findings, key=lambda f: -f.probability),
        shadow=sorted(row.shadow_findings, key=lambda f: -f.probability)
        if caller.may("engineer")
        else None,
        timeline=timeline_entries(timeline),
        deliveries=as_shown(context.catalogue.deliveries(study_uid=study_uid)),
        pacs=settings.pacs is not None or settings.pacs_protocol == "dicomweb",
        key_image_url=f"/studies/{study_uid}/key-image.png" if made is not None else None,
        key_caption=made.caption if made is not None else "",
        no_key_image=row.reason
        or ("No analysed series yet." if row.triaged_at is None else "No key image could be made."),
        viewer_link=settings.viewer_url.format(study_uid=quote(study_uid))
        if settings.viewer_url
        else None,
    )


_KEY_IMAGES_KEPT = 32


def _key_image(context: WebContext, row: WorklistRow, engineer: bool) -> KeyImage | None:
    """The study's key image, made once per result (the page and its image ask for it)."""
    from triage.worklist.key_image import key_image

    kept: OrderedDict[tuple[str, object, bool], KeyImage | None] = context.key_images
    key = (row.study_instance_uid, row.triaged_at, engineer)
    if key in kept:
        kept.move_to_end(key)
        return kept[key]
    if row.triaged_at is None:
        return None
    try:
        made = key_image(
            context.store, context.catalogue, row.study_instance_uid, include_shadow=engineer
        )
    except (TriageError, OSError, ValueError) as exc:  # the page shows the rest regardless
        log.warning("study %s: no key image: %s", row.study_instance_uid, exc)
        made = None
    kept[key] = made
    while len(kept) > _KEY_IMAGES_KEPT:
        kept.popitem(last=False)
    return made


@router.get("/studies/{study_uid}/key-image.png")
def study_key_image(request: Request, study_uid: str) -> Response:
    context = _context(request)
    caller = context.caller(request)
    rows = context.catalogue.worklist(study_uid)
    made = _key_image(context, rows[0], caller.may("engineer")) if rows else None
    if made is None:
        return Response(status_code=404)
    return Response(made.png, media_type="image/png", headers=NO_STORE)


@router.post("/studies/{study_uid}/rerun")
async def study_rerun(request: Request, study_uid: str) -> Response:
    context = _context(request)
    caller = context.caller(request)
    await check_change(request, caller)
    text = actions.rerun(context.catalogue, caller, study_uid, client_of(request))
    return RedirectResponse(f"/studies/{study_uid}?message={quote(text)}", status_code=303)


@router.post("/studies/{study_uid}/ack")
async def study_ack(request: Request, study_uid: str) -> Response:
    context = _context(request)
    caller = context.caller(request)
    await check_change(request, caller)
    reason = str((await request.form()).get("reason", ""))
    text = actions.acknowledge(context.catalogue, caller, study_uid, reason, client_of(request))
    return RedirectResponse(f"/studies/{study_uid}?message={quote(text)}", status_code=303)


@router.get("/models")
def models(request: Request) -> Response:
    from triage.worklist.models_page import model_views

    context = _context(request)
    caller = context.caller(request)
    require(caller, "engineer")
    return context.page(
        request, "models.html", caller=caller, page="models", models=model_views(context)
    )


@router.get("/outbox")
def outbox(request: Request) -> Response:
    context = _context(request)
    caller = context.caller(request)
    require(caller, "admin")
    return context.page(
        request,
        "outbox.html",
        caller=caller,
        page="outbox",
        rows=as_shown(context.catalogue.deliveries()),
    )


@router.post("/outbox/retry")
async def outbox_retry(request: Request) -> Response:
    context = _context(request)
    caller = context.caller(request)
    await check_change(request, caller)
    text = actions.retry_outbox(context.catalogue, caller, client_of(request))
    return RedirectResponse(f"/outbox?message={quote(text)}", status_code=303)


@router.post("/outbox/{delivery_id}/drop")
async def outbox_drop(request: Request, delivery_id: int) -> Response:
    context = _context(request)
    caller = context.caller(request)
    await check_change(request, caller)
    text = actions.drop_outbox(context.catalogue, caller, [delivery_id], client_of(request))
    return RedirectResponse(f"/outbox?message={quote(text)}", status_code=303)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """Prometheus metrics (scrape with basic auth and a triage account)."""
    from triage.worklist.metrics import metrics_payload

    context = _context(request)
    context.caller(request)
    body, content_type = metrics_payload(
        context.catalogue, quiet_seconds=context.settings.quiet_seconds
    )
    return Response(body, media_type=content_type)
