"""`triage doctor`: every dependency the settings name, checked from here, each answer in words.

The object store (write, read back, delete a probe), the catalogue database (reachable, at the
schema level this version needs), the Prefect API (a server's health, or the embedded one), the
PACS (C-ECHO over DIMSE, with TLS when TRIAGE_PACS_TLS; or a QIDO-RS query over DICOMweb), the
pull source, the HL7 endpoint (a TCP connection). Nothing is changed but the probe object.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from triage.config import Settings


@dataclass(frozen=True)
class Check:
    what: str
    ok: bool
    says: str


def run_checks(settings: Settings) -> list[Check]:
    checks: list[tuple[str, Callable[[Settings], str | None]]] = [
        ("object store (TRIAGE_STORE)", _store),
        ("catalogue (TRIAGE_DATABASE_URL)", _database),
        ("Prefect API (PREFECT_API_URL)", _prefect),
        ("PACS (TRIAGE_PACS)", _pacs),
        ("DICOMweb (TRIAGE_DICOMWEB_URL)", _dicomweb),
        ("HL7 (TRIAGE_HL7_ENDPOINT)", _hl7),
    ]
    out = []
    for what, check in checks:
        try:
            says = check(settings)
        except Exception as exc:  # the check's failure is its answer
            out.append(Check(what, False, _words(exc)))
            continue
        if says is not None:
            out.append(Check(what, True, says))
    return out


def _words(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__  # one line, all of it


def _store(settings: Settings) -> str:
    from triage.store import open_store

    store = open_store(settings.store, settings.s3)
    key = f"doctor/probe-{uuid.uuid4().hex}"
    payload = os.urandom(64)
    store.put(key, payload)
    try:
        back = store.get(key)
    finally:
        store.delete(key)
    if back != payload:
        raise RuntimeError(f"{settings.store}: an object read back differs from what was written")
    return f"{settings.store}: write, read back and delete work"


def _database(settings: Settings) -> str:
    from triage.catalogue.database import shown_url, with_engine
    from triage.catalogue.schema import Standing, head, level_of

    found = with_engine(settings.database_url, level_of)
    where, level = shown_url(settings.database_url), found.level or "none"
    if found.standing is Standing.CURRENT:
        return f"{where}: reachable, schema level {level} (current)"
    if found.standing is Standing.EMPTY:
        return f"{where}: reachable and empty; the first node to start creates the schema"
    if found.standing is Standing.NEWER:
        raise RuntimeError(
            f"{where}: schema level {level} is newer than this version of triage ({head()})"
        )
    if settings.database_url.startswith("sqlite"):
        return f"{where}: schema level {level}; the node upgrades it to {head()} at start"
    raise RuntimeError(
        f"{where}: schema level {level}, this version needs {head()}: run `triage db upgrade`"
    )


def _prefect(settings: Settings) -> str:
    url = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    if not url:
        return "not set: `triage serve` starts an embedded Prefect API of its own"
    from triage.app.prefect_api import health_problem

    problem = health_problem(url)
    if problem is not None:
        raise RuntimeError(f"{url}: no Prefect server answers ({problem})")
    return f"{url}: the Prefect server answers"


def _pacs(settings: Settings) -> str | None:
    if settings.pacs is None:
        return "not set: results stay in the outbox"
    if settings.pacs_protocol == "dicomweb":
        return f"{settings.pacs}: results go by DICOMweb (see the DICOMweb check)"
    from triage.app.readiness import pacs_echo  # the probe /readyz makes too

    return pacs_echo(settings)


def _dicomweb(settings: Settings) -> str | None:
    if not settings.dicomweb_url:
        return None
    from triage.app.readiness import dicomweb_query

    return dicomweb_query(settings)


def _hl7(settings: Settings) -> str | None:
    if not settings.hl7_endpoint:
        return None
    host, _, port = settings.hl7_endpoint.rpartition(":")
    try:
        socket.create_connection((host, int(port)), 5).close()
    except OSError as exc:
        raise RuntimeError(f"{settings.hl7_endpoint}: cannot connect ({exc})") from exc
    return f"{settings.hl7_endpoint}: accepts connections"


def doctor() -> None:
    """Check every dependency the settings name (store, catalogue, Prefect, PACS, DICOMweb,
    HL7) and say in words what is wrong; exits 1 when anything is."""
    import typer
    from rich.console import Console

    from triage.config import load_settings

    console = Console()
    checks = run_checks(load_settings())
    for check in checks:
        mark = "[green]ok[/]  " if check.ok else "[bold red]FAIL[/]"
        console.print(f"{mark} {check.what}: {check.says}", highlight=False, soft_wrap=True)
    if not all(check.ok for check in checks):
        raise typer.Exit(1)
