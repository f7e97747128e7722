"""The web app: the clinicians' worklist and study pages, the models and outbox pages, the
JSON API, and the health and metrics endpoints (FastAPI, pages rendered on the server).

`create_app` builds it over the node's catalogue and store; `triage serve` runs it on
TRIAGE_WEB_PORT beside the receiver (`triage.worklist.server`), `triage web` on its own.
Every page and API call needs a login (`triage.worklist.auth`) except ``/healthz`` and
``/readyz``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from triage.errors import TriageError
from triage.worklist import api, pages
from triage.worklist.actions import NotFound
from triage.worklist.auth import Forbidden, NotLoggedIn, TooManyFailures
from triage.worklist.context import HERE, WebContext


def create_app(context: WebContext) -> FastAPI:
    app = FastAPI(
        title="triage",
        summary="AI triage worklist: studies in the order to read them, their findings",
        version=context.version or "0",
        docs_url=None,  # the Swagger page loads its scripts from a CDN: ours is /api/docs
        redoc_url=None,
        openapi_url=None,  # served behind the login by the API router
    )
    app.state.context = context
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(api.router)
    app.include_router(pages.router)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[..., Any]) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'",
        )
        return response

    @app.exception_handler(NotLoggedIn)
    async def not_logged_in(request: Request, _exc: NotLoggedIn) -> Response:
        if _wants_json(request):
            return JSONResponse(
                {"detail": "log in: a session cookie, or HTTP basic auth with a triage account"},
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="triage"'},
            )
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        response = RedirectResponse(f"/login?next={_quoted(target)}", status_code=303)
        return response

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": exc.why}, status_code=403)
        return PlainTextResponse(f"Forbidden: {exc.why}", status_code=403)

    @app.exception_handler(TooManyFailures)
    async def too_many(request: Request, _exc: TooManyFailures) -> Response:
        text = "too many failed logins: wait 15 minutes, or ask an admin"
        headers = {"Retry-After": "900"}
        if _wants_json(request):
            return JSONResponse({"detail": text}, status_code=429, headers=headers)
        page = context.page(request, "login.html", error=text, login_csrf="", next="/worklist")
        page.status_code = 429
        page.headers.update(headers)
        return page

    @app.exception_handler(TriageError)
    async def refused(request: Request, exc: TriageError) -> Response:
        status = 404 if isinstance(exc, NotFound) else 400
        if _wants_json(request):
            return JSONResponse({"detail": str(exc)}, status_code=status)
        return PlainTextResponse(str(exc), status_code=status)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        """Alive: the process answers (what a liveness probe asks)."""
        return {"status": "alive"}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        """Ready: the catalogue, the store, the Prefect API and the PACS answer."""
        ok, problems = context.ready()
        body = {"status": "ready" if ok else "not ready", "problems": problems}
        return JSONResponse(body, status_code=200 if ok else 503)

    return app


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith(("/api/", "/metrics")) or (
        "application/json" in request.headers.get("accept", "")
    )


def _quoted(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="/")
