"""Readiness: whether the node can do its work now, for the web app's ``/readyz``.

`readiness_checks` names one check per peer the node works with: the catalogue, the object
store, the Prefect API (when PREFECT_API_URL is set) and the PACS (when TRIAGE_PACS is set).
Each answers None when fine, else a short reason a person can act on, and is bounded to a few
seconds; `run_checks` runs them side by side under one overall timeout, so that ``/readyz``
answers within seconds even when a peer hangs. Build the checks once and run them per request:
a check whose last run has not returned yet answers so rather than start another.

Nothing is written: the store is asked whether one known key exists, the catalogue for one
row, the PACS for a C-ECHO. The PACS probes are the ones `triage doctor` uses too.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from triage.app.prefect_api import health_problem
from triage.catalogue import Catalogue, Study
from triage.config import Settings
from triage.errors import TriageError
from triage.receive.receiver import RUNNING_MARKER
from triage.store import LocalStore, ObjectStore

#: how long one probe of a peer may take (connect, answer)
CHECK_SECONDS = 3.0
#: how long `run_checks` waits for all of them together
READY_SECONDS = 5.0
#: what `run_checks` says of a check that found nothing wrong
OK = "ok"

Check = Callable[[], str | None]


def readiness_checks(
    settings: Settings, catalogue: Catalogue, store: ObjectStore
) -> dict[str, Check]:
    """The checks of the node's peers, by name: ``catalogue``, ``store``, ``prefect`` (only
    when PREFECT_API_URL is set now) and ``pacs`` (only when TRIAGE_PACS is set)."""
    checks: dict[str, Check] = {
        "catalogue": lambda: catalogue_problem(catalogue),
        "store": lambda: store_problem(store),
    }
    prefect_url = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    if prefect_url:
        checks["prefect"] = lambda: prefect_problem(prefect_url)
    if settings.pacs is not None:
        checks["pacs"] = lambda: pacs_problem(settings)
    return {name: OneAtATime(check) for name, check in checks.items()}


def run_checks(
    checks: Mapping[str, Check], timeout: float = READY_SECONDS
) -> tuple[bool, dict[str, str]]:
    """Run every check at once; True when all are fine, and per check `OK` or its reason
    (one that has not answered within ``timeout`` seconds is left running, and says so)."""
    answers: dict[str, str] = {}
    lock = threading.Lock()

    def run(name: str, check: Check) -> None:
        try:
            problem = check()
        except Exception as exc:  # the check's failure is its answer
            problem = words(exc)
        with lock:
            answers[name] = OK if problem is None else problem

    threads = [
        threading.Thread(target=run, args=(name, check), name=f"readyz-{name}", daemon=True)
        for name, check in checks.items()
    ]
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    with lock:
        out = {name: answers.get(name, f"no answer within {timeout:g} s") for name in checks}
    return all(answer == OK for answer in out.values()), out


class OneAtATime:
    """A check that is not started again while its last run has not returned: a peer that
    hangs would otherwise gather one more waiting thread with every ``/readyz``."""

    def __init__(self, check: Check) -> None:
        self.check = check
        self._running = threading.Lock()
        self._since = 0.0

    def __call__(self) -> str | None:
        if not self._running.acquire(blocking=False):
            waited = time.monotonic() - self._since
            return f"the last check has not returned after {waited:.0f} s"
        self._since = time.monotonic()
        try:
            return self.check()
        finally:
            self._running.release()


def words(exc: BaseException) -> str:
    """An exception as one line of what it says, all of it."""
    return " ".join(str(exc).split()) or type(exc).__name__


def catalogue_problem(catalogue: Catalogue) -> str | None:
    """The catalogue answers a read of one study row (through the node's own connections)."""
    try:
        with catalogue.session() as s:
            s.execute(select(Study.id).limit(1)).all()
    except SQLAlchemyError as exc:
        where = catalogue.engine.url.render_as_string(hide_password=True)
        cause = words(getattr(exc, "orig", None) or exc)
        return f"cannot read the catalogue database {where} (TRIAGE_DATABASE_URL): {cause}"
    return None


def store_problem(store: ObjectStore) -> str | None:
    """The store answers whether one known key exists (an S3 store: a HEAD of one object);
    a folder store is also a folder this process may write in."""
    if isinstance(store, LocalStore):
        root = store.root
        if not root.is_dir():
            return f"the object store folder {root} (TRIAGE_STORE) is not there"
        if not os.access(root, os.W_OK | os.X_OK):
            return f"the object store folder {root} (TRIAGE_STORE) is not writable by this node"
    try:
        store.exists(RUNNING_MARKER)
    except TriageError as exc:
        return f"the object store (TRIAGE_STORE) does not answer: {words(exc)}"
    return None


def prefect_problem(url: str) -> str | None:
    problem = health_problem(url, timeout=CHECK_SECONDS)
    if problem is None:
        return None
    return f"no Prefect API answers at PREFECT_API_URL={url} ({problem})"


def pacs_problem(settings: Settings) -> str | None:
    """The PACS answers a C-ECHO (a QIDO-RS query when results go by DICOMweb)."""
    try:
        if settings.pacs_protocol == "dicomweb":
            dicomweb_query(settings)
        else:
            pacs_echo(settings, timeout=CHECK_SECONDS)
    except Exception as exc:  # the probe's failure is its answer
        return words(exc)
    return None


def pacs_echo(settings: Settings, timeout: float = 10.0) -> str:
    """C-ECHO the PACS of TRIAGE_PACS (over TLS with TRIAGE_PACS_TLS): what went well, else a
    RuntimeError that says what failed."""
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    from triage.dimse import NoDelayAE
    from triage.receive.tls import sender_context

    node = settings.pacs
    if node is None:
        raise RuntimeError("TRIAGE_PACS is not set")
    ae = NoDelayAE(ae_title=settings.ae_title)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = timeout
    tls = sender_context(settings) if settings.pacs_tls else None
    tls_args = (tls, node.host) if tls is not None else None
    assoc = ae.associate(node.host, node.port, ae_title=node.ae_title, tls_args=tls_args)
    if not assoc.is_established:
        how = "rejected" if assoc.is_rejected else "not established (not reachable, or aborted)"
        raise RuntimeError(f"{node}: the association was {how}")
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if not status or status.Status != 0:
        raise RuntimeError(f"{node}: C-ECHO failed")
    return f"{node}: C-ECHO succeeded" + (" over TLS" if tls else "")


def dicomweb_query(settings: Settings) -> str:
    """A QIDO-RS query of one study at TRIAGE_DICOMWEB_URL: what went well, else a
    DeliveryError that says what failed."""
    from triage.receive.dicomweb import http_error, make_client

    client = make_client(settings)
    try:
        client.search_for_studies(limit=1)
    except Exception as exc:
        raise http_error(exc, settings.dicomweb_url, "study query") from exc
    return f"{settings.dicomweb_url}: QIDO-RS answers"
