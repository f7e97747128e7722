"""What the web app's pages and API work on (`WebContext`), apart from the app that routes
to them (`triage.worklist.web`), so that the pages and the app import in one direction."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates

from triage.catalogue import Catalogue
from triage.config import Settings
from triage.store import ObjectStore
from triage.worklist.auth import Caller, caller_of

HERE = Path(__file__).parent

#: readiness: each check's name and a probe that returns None when fine, else why not
ReadyChecks = Callable[[], tuple[bool, dict[str, str]]]


@dataclass
class WebContext:
    """What the pages and the API work on."""

    settings: Settings
    catalogue: Catalogue
    store: ObjectStore
    #: /readyz: runs the checks (the app layer's, `triage.app.readiness`), says what is wrong
    ready: ReadyChecks
    version: str = ""
    #: key images made, by (study, triaged at, with shadow results): `pages._key_image`
    key_images: OrderedDict[Any, Any] = field(default_factory=OrderedDict, repr=False)
    templates: Jinja2Templates = field(
        default_factory=lambda: Jinja2Templates(directory=str(HERE / "templates"))
    )

    def caller(self, request: Request) -> Caller:
        return caller_of(request, self.catalogue, self.settings.web_session_hours)

    def page(self, request: Request, name: str, **values: Any) -> Response:
        values.setdefault("caller", None)
        values.setdefault("message", request.query_params.get("message"))
        return self.templates.TemplateResponse(
            request, name, {"version": self.version, **values}, headers=NO_STORE
        )


#: pages hold patient data: no browser or proxy keeps a copy
NO_STORE = {"Cache-Control": "no-store"}
