"""The `triage` command."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from triage.app.db_cli import db_app
from triage.app.doctor import doctor
from triage.app.models_cli import models_app
from triage.app.outbox_cli import outbox_app
from triage.app.runtime import StopSignal
from triage.app.users_cli import users_app, web
from triage.config import Settings, load_settings, parse_node
from triage.errors import TriageError

app = typer.Typer(
    help="AI triage for incoming CT/MR studies: receive, triage, report to the PACS.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(outbox_app, name="outbox")
app.add_typer(models_app, name="models")
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.command()(doctor)
app.command()(web)

console = Console()
errors = Console(stderr=True)


def _settings() -> Settings:
    from triage.app.runtime import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level)
    return settings


@app.command()
def config() -> None:
    """Print the effective configuration (environment, config file, defaults)."""
    from triage.receive.tls import receiver_context, sender_context

    settings = load_settings()
    receiver_context(settings)  # a certificate or key that cannot work stops here, named
    sender_context(settings)
    for key, value in settings.as_dict().items():
        sys.stdout.write(f"{key:26} {value}\n")
    if settings.pacs is None:
        errors.print("[yellow]warning:[/] TRIAGE_PACS is not set: results stay in the outbox")
    if not settings.allowed_aes:
        errors.print(
            "[yellow]warning:[/] TRIAGE_ALLOWED_AES is not set: the receiver accepts "
            "associations from any calling AE title"
        )


@app.command()
def receive() -> None:
    """Run the DICOM receiver only (store + catalogue), until SIGTERM or Ctrl-C."""
    from triage.catalogue import Catalogue
    from triage.receive.receiver import Receiver
    from triage.store import open_store

    settings = _settings()
    stop = StopSignal()  # before anything starts listening
    settings.home.mkdir(parents=True, exist_ok=True)
    receiver = Receiver.from_settings(
        open_store(settings.store, settings.s3), Catalogue(settings.database_url), settings
    )
    receiver.start(settings.host, settings.port)
    stop.wait()
    receiver.stop()


@app.command()
def serve(
    role: Annotated[
        str,
        typer.Option(
            help="all: the whole node in this process. receiver: receive, hand-off and "
            "delivery (no models). worker: triage the studies of the shared catalogue.",
        ),
    ] = "all",
) -> None:
    """Run the node: receiver, completion, triage and delivery (or one role of them)."""
    from triage.app.node import NodeRole, start_node

    try:
        chosen = NodeRole(role)
    except ValueError:
        raise TriageError(f"--role {role!r}: choose all, receiver or worker") from None
    settings = _settings()
    stop = StopSignal()  # before anything starts listening
    node = start_node(settings, role=chosen, web=chosen is not NodeRole.WORKER)
    results = settings.pacs or "the outbox (TRIAGE_PACS not set)"
    if chosen is NodeRole.WORKER:
        console.print(f"triage worker {settings.worker}: triaging studies of the catalogue")
    else:
        what = "node" if chosen is NodeRole.ALL else "receiver"
        console.print(
            f"triage {what} {settings.ae_title} on {settings.host}:{node.port}; "
            f"results to {results}"
        )
    if node.web is not None:
        console.print(f"worklist on {node.web.url}")
    stop.wait()
    console.print("stopping: finishing the study in hand")
    node.stop()


@app.command()
def inspect(
    paths: Annotated[
        list[str],
        typer.Argument(help="DICOM files or folders, or a StudyInstanceUID in the node's store."),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Show every series found and the volume the pipeline makes of it, or why it makes none,
    and which series each of the node's models would analyse and why not the others."""
    from triage.app.inspect_models import model_choices, node_models
    from triage.app.inspect_view import inspection_lines
    from triage.imaging.inspect import inspect_keys, inspect_paths
    from triage.imaging.volume import AssemblyOptions

    settings = load_settings()
    options = AssemblyOptions(uneven_spacing=settings.uneven_spacing)
    files = [Path(p) for p in paths]
    if all(f.exists() for f in files):
        result = inspect_paths(files, options)
        catalogued = [s.summary for s in result.series if s.summary is not None]
        uncatalogued = [s for s in result.series if s.summary is None]
    elif len(paths) == 1 and not files[0].exists() and "/" not in paths[0]:
        from triage.catalogue import Catalogue
        from triage.store import open_store

        unknown = f"{paths[0]} is neither a file or folder nor a study in the catalogue"
        try:
            series = Catalogue(settings.database_url).series_of(paths[0])
        except TriageError as exc:
            raise TriageError(f"{unknown} ({exc})") from exc
        if not series:
            raise TriageError(unknown)
        store = open_store(settings.store, settings.s3)
        result = inspect_keys(store.get, [s.keys for s in series], options)
        catalogued, uncatalogued = series, []
    else:
        missing = ", ".join(p for p, f in zip(paths, files, strict=True) if not f.exists())
        raise TriageError(f"no such file or folder: {missing}")
    source, models = node_models(settings)
    choices = model_choices(models, catalogued, uncatalogued)
    if as_json:
        report = {
            **result.as_dict(),
            "models_from": source,
            "models": [c.as_dict() for c in choices],
        }
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    for line in inspection_lines(result, source, choices):
        console.print(line, highlight=False, soft_wrap=True)


@app.command()
def worklist(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print the studies: urgent first, then by arrival time."""
    from triage.catalogue import Catalogue
    from triage.worklist.view import worklist_json, worklist_table

    settings = load_settings()
    rows = Catalogue(settings.database_url).worklist()
    if as_json:
        sys.stdout.write(json.dumps(worklist_json(rows), indent=2) + "\n")
    else:
        console.print(worklist_table(rows, console.width))


@app.command()
def send(
    paths: Annotated[list[Path], typer.Argument(help="DICOM files or folders to send.")],
    to: Annotated[str, typer.Option(help="Destination as AE@host:port.")],
    calling_ae: Annotated[str, typer.Option(help="Our AE title.")] = "TRIAGE_SCU",
) -> None:
    """Send DICOM files over C-STORE (a small modality stand-in)."""
    import pydicom

    from triage.dimse import is_success, store_datasets

    node = parse_node("--to", to)
    if node is None:
        raise TriageError("--to is empty: give AE@host:port")
    files = sorted(
        p for path in paths for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()
    )
    datasets = [pydicom.dcmread(f) for f in files]
    statuses = store_datasets(node, datasets, calling_ae)
    failed = [
        f"{f.name}: 0x{s:04X}" for f, s in zip(files, statuses, strict=True) if not is_success(s)
    ]
    console.print(f"sent {len(files) - len(failed)} of {len(files)} file(s) to {node}")
    if failed:
        errors.print("failed: " + ", ".join(failed))
        raise typer.Exit(1)


@app.command()
def pull(
    once: Annotated[
        bool, typer.Option("--once", help="Run one poll-and-retrieve cycle, then exit.")
    ] = False,
) -> None:
    """Find new studies on the PACS (TRIAGE_PACS) and retrieve those not here yet.

    `triage serve` does this every TRIAGE_PULL_INTERVAL seconds; this runs one cycle. With
    C-MOVE the PACS sends the study to this node's receiver: the running `triage serve`, or a
    receiver started here for the cycle.
    """
    if not once:
        raise TriageError("use `triage pull --once`; `triage serve` polls on its own schedule")
    from triage.app.runtime import configure_prefect
    from triage.app.services import Services, serve_in_this_process
    from triage.receive.pull import describe, puller_for
    from triage.receive.receiver import Receiver

    settings = _settings()
    configure_prefect(settings)
    from flows.pull import pull_new_studies

    svc = Services.open(settings, models=False)
    receiver = Receiver.from_settings(svc.store, svc.catalogue, settings)
    listening = False
    if settings.pacs_protocol == "dimse" and settings.pull_retrieve == "c-move":
        try:
            receiver.start(settings.host, settings.port)
            listening = True
        except TriageError as exc:  # the port is taken: most likely `triage serve` receives
            errors.print(f"[yellow]note:[/] no receiver started here ({exc}); C-MOVE goes there")
    puller = svc.puller = puller_for(settings, svc.store, svc.catalogue, receiver)
    serve_in_this_process(svc)
    try:
        pull_new_studies()
        summary = puller.last_summary
    finally:
        serve_in_this_process(None)
        if listening:
            receiver.stop()
        svc.close()
    for line in describe(summary):
        console.print(line)
    if summary.failed:
        raise typer.Exit(1)


@app.command()
def rerun(study_instance_uid: str) -> None:
    """Triage a study again (e.g. after it was *not analysed*)."""
    from triage.catalogue import Catalogue

    settings = load_settings()
    if not Catalogue(settings.database_url).reopen(study_instance_uid):
        raise TriageError(f"study {study_instance_uid} is not in the catalogue")
    console.print("queued: a running `triage serve` triages it after the quiet period")


@app.command()
def ack(
    study_instance_uid: str,
    reason: Annotated[str, typer.Option(help="Why the lower priority is right (audited).")],
    by: Annotated[
        str | None, typer.Option(help="Who accepts it (default: the login name).")
    ] = None,
) -> None:
    """Accept the lower priority a re-run gave a study (it stays urgent until someone does).

    The held result then goes to the PACS (and HL7) as a new revision, and who, when and why
    is recorded (`triage acknowledgements`).
    """
    import getpass

    from triage.catalogue import Catalogue

    catalogue = Catalogue(load_settings().database_url)
    try:
        done = catalogue.acknowledge(study_instance_uid, who=by or getpass.getuser(), reason=reason)
    finally:
        catalogue.close()
    console.print(
        f"study {done.study_instance_uid}: {done.from_priority} -> {done.to_priority}, "
        f"accepted by {done.who}; a running `triage serve` sends the new result"
    )


@app.command()
def acknowledgements(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of lines.")] = False,
) -> None:
    """List the accepted downgrades: study, when, who, why, from and to which priority."""
    from triage.catalogue import Catalogue

    rows = Catalogue(load_settings().database_url).acknowledgements()
    if as_json:
        out = [{**vars(r), "at": r.at.isoformat() + "Z"} for r in rows]
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return
    for r in rows:
        console.print(
            f"{r.at:%Y-%m-%d %H:%M:%S} {r.study_instance_uid} {r.from_priority} -> "
            f"{r.to_priority} by {r.who}: {r.reason}",
            highlight=False,
        )


@app.command()
def demo(
    studies: Annotated[int, typer.Option(help="Number of analysable studies to send.")] = 6,
    web: Annotated[
        bool, typer.Option(help="Keep the web worklist up afterwards, until Ctrl-C.")
    ] = False,
) -> None:
    """Receive synthetic head CTs, triage them, deliver SRs and show the worklist."""
    import os

    from triage.app.demo import run_demo

    if "TRIAGE_LOG_LEVEL" not in os.environ:  # keep the progress bars readable
        os.environ["TRIAGE_LOG_LEVEL"] = "WARNING"
    settings = _settings()
    raise typer.Exit(run_demo(settings, studies, console, web=web))


def main() -> None:
    try:
        app()
    except TriageError as exc:
        errors.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
