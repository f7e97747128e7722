"""The web app as the node and `triage web` start it: its context over the node's services,
readiness over the node's peers, and its server on TRIAGE_WEB_PORT."""

from __future__ import annotations

import logging

from triage import __version__
from triage.catalogue import Catalogue
from triage.config import Settings
from triage.store import ObjectStore
from triage.worklist.context import WebContext
from triage.worklist.server import WebServer
from triage.worklist.web import create_app

log = logging.getLogger(__name__)


def start_web(
    settings: Settings, catalogue: Catalogue, store: ObjectStore, port: int | None = None
) -> WebServer:
    """Start the web app (``port``: instead of TRIAGE_WEB_PORT, e.g. 0 for any free one)."""
    from triage.app.readiness import readiness_checks, run_checks

    checks = readiness_checks(settings, catalogue, store)
    context = WebContext(
        settings, catalogue, store, ready=lambda: run_checks(checks), version=__version__
    )
    server = WebServer(create_app(context), settings, port)
    server.start()
    if not catalogue.users():
        log.warning(
            "the web app has no account yet: add one with `triage users add NAME --role admin`"
        )
    return server
