"""`triage users`: the accounts of the web app and its API (clinician, engineer, admin), and
`triage web`, the web app on its own."""

from __future__ import annotations

import getpass
import sys
from typing import Annotated

import typer
from rich.console import Console

from triage.catalogue import ROLES, Catalogue
from triage.config import load_settings
from triage.errors import TriageError

users_app = typer.Typer(
    help="The web app's accounts: clinicians read, engineers also see shadow results and "
    "models, admins may also re-run, acknowledge and manage the outbox.",
    no_args_is_help=True,
)
console = Console()


def _catalogue() -> Catalogue:
    return Catalogue(load_settings().database_url)


def read_password(prompt: str = "Password") -> str:
    """From the terminal (asked twice, not echoed), else the first line of stdin: a password
    never goes on the command line, where `ps` and the shell history would show it."""
    if sys.stdin.isatty():
        first = getpass.getpass(f"{prompt}: ")
        if getpass.getpass(f"{prompt} again: ") != first:
            raise TriageError("the two passwords differ")
        return first
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise TriageError("no password on stdin: pipe it in, e.g. from a secrets file")
    return line


@users_app.command("add")
def users_add(
    name: str,
    role: Annotated[str, typer.Option(help=f"One of {', '.join(ROLES)}.")] = "clinician",
) -> None:
    """Add an account; its password is read from stdin (or asked for at a terminal)."""
    from triage.worklist.passwords import hash_password

    if role not in ROLES:
        raise TriageError(f"--role {role!r}: choose {', '.join(ROLES)}")
    catalogue = _catalogue()
    catalogue.add_user(name, role, hash_password(read_password()))
    console.print(f"user {name} added ({role})")


@users_app.command("list")
def users_list() -> None:
    """The accounts, their roles and when their password was set."""
    for account in _catalogue().users():
        console.print(
            f"{account.name:24} {account.role:10} password set "
            f"{account.password_changed_at:%Y-%m-%d %H:%M} UTC",
            highlight=False,
        )


@users_app.command("remove")
def users_remove(name: str) -> None:
    """Remove an account; its sessions end at once."""
    if not _catalogue().remove_user(name):
        raise TriageError(f"no user {name!r}: `triage users list` shows them")
    console.print(f"user {name} removed")


@users_app.command("passwd")
def users_passwd(name: str) -> None:
    """Set a new password (from stdin, or asked for); the account's sessions end."""
    from triage.worklist.passwords import hash_password

    catalogue = _catalogue()
    if catalogue.user(name) is None:
        raise TriageError(f"no user {name!r}: `triage users add {name} --role ...`")
    catalogue.set_password(name, hash_password(read_password("New password")))
    console.print(f"password of {name} changed; their sessions have ended")


def web(
    port: Annotated[
        int | None, typer.Option(help="Instead of TRIAGE_WEB_PORT (default 8080).")
    ] = None,
) -> None:
    """Run the web app alone (the worklist, the API, health and metrics), until SIGTERM."""
    from triage.app.runtime import StopSignal, configure_logging
    from triage.app.web_app import start_web
    from triage.store import open_store

    settings = load_settings()
    configure_logging(settings.log_level)
    if port is None and settings.web_port is None:
        raise TriageError("TRIAGE_WEB_PORT=off: give --port, or set TRIAGE_WEB_PORT")
    stop = StopSignal()
    catalogue = Catalogue(settings.database_url)
    server = start_web(settings, catalogue, open_store(settings.store, settings.s3), port)
    console.print(f"triage web app on {server.url}")
    stop.wait()
    server.stop()
    catalogue.close()


@users_app.command("audit")
def users_audit(
    study: Annotated[str | None, typer.Option(help="Only this StudyInstanceUID.")] = None,
    who: Annotated[str | None, typer.Option(help="Only this account.")] = None,
    limit: Annotated[int, typer.Option(help="How many events, newest first.")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of lines.")] = False,
) -> None:
    """The access audit, newest first: logins, failed logins, study views and changes."""
    import json

    rows = _catalogue().access_log(study_uid=study, who=who, limit=limit)
    if as_json:
        out = [{**vars(r), "at": r.at.isoformat() + "Z"} for r in rows]
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return
    for r in rows:
        console.print(
            f"{r.at:%Y-%m-%d %H:%M:%S} {r.who:16} {r.action:14} {r.study_instance_uid or '-'} "
            f"{r.client} {r.detail}",
            highlight=False,
        )
