"""`triage demo`: synthetic head CTs in, a prioritised worklist out, over real DICOM.

It starts the node (receiver, watcher, Prefect triage flow, delivery), writes a set of
synthetic head-CT studies (some with a hyperdense lesion, some without, one with no usable
series), sends each from a separate `triage send` process over a real association, waits until
every study is triaged and every SR delivered, and prints the worklist.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from triage.app.runtime import StopSignal
from triage.catalogue import Catalogue
from triage.config import AllowedAE, DicomNode, Settings
from triage.results import DeliveryState, StudyState
from triage.synthetic.phantom import head_phantom
from triage.synthetic.series import write_study
from triage.worklist.view import worklist_table

if TYPE_CHECKING:
    from triage.app.services import Services

DEMO_TIMEOUT_SECONDS = 170
DEMO_SENDER_AE = "DEMO_CT"


@dataclass(frozen=True)
class DemoStudy:
    folder: Path
    study_instance_uid: str
    accession_number: str
    lesion: bool
    analysable: bool


def write_demo_studies(
    root: Path,
    count: int,
    seed: int = 7,
    shape: tuple[int, int, int] = (256, 256, 32),
    spacing: tuple[float, float, float] = (0.9, 0.9, 5.0),
    unanalysable: int = 1,
    run_id: str | None = None,
) -> list[DemoStudy]:
    """Write `count` head CTs (alternating lesion / no lesion) plus `unanalysable` studies that
    hold only a scout and a short series. Fresh UIDs per run unless run_id is given."""
    rng = np.random.default_rng(seed)
    run = run_id or uuid.uuid4().hex[:12]
    studies = []
    for i in range(count + unanalysable):
        analysable = i < count
        lesion = analysable and i % 2 == 0
        study_uid = _uid(run, "study", str(i))
        accession = f"D{run[:5].upper()}{i + 1:02d}"
        phantom = head_phantom(
            rng,
            shape if analysable else (shape[0], shape[1], 8),
            spacing,
            lesion,
            lesion_radius_mm=float(rng.uniform(8, 15)) if lesion else None,
        )
        common: dict[str, str] = dict(
            study_instance_uid=study_uid,
            patient_id=f"DEMO-{i + 1:03d}",
            patient_name=f"Demo^Patient{i + 1:02d}",
            accession_number=accession,
            study_description="CT HEAD WITHOUT CONTRAST",
            study_date=time.strftime("%Y%m%d"),
            study_time=time.strftime("%H%M%S"),
        )
        folder = root / accession
        write_study(
            folder,
            phantom.hu,
            phantom.spacing,
            scout_series_uid=_uid(run, "scout", str(i)),
            series_instance_uid=_uid(run, "axial", str(i)),
            series_description="Head 5mm" if analysable else "Head 5mm (partial)",
            **common,
        )
        studies.append(DemoStudy(folder, study_uid, accession, lesion, analysable))
    return studies


def _uid(*parts: str) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["triage-demo", *parts]))


def run_demo(settings: Settings, count: int, console: Console, web: bool = False) -> int:
    """Send ``count`` synthetic studies through a node and show the worklist. ``web``: the
    web app too, with a demo login; it stays up after the demo until Ctrl-C or SIGTERM."""
    from triage.app.node import start_node
    from triage.synthetic.standin_pacs import StandInPacs

    standin = None
    if settings.pacs is None:
        standin = StandInPacs(settings.home / "demo-pacs")
        pacs_port = standin.start()
        settings = dataclasses.replace(
            settings, pacs=DicomNode(standin.ae_title, "127.0.0.1", pacs_port)
        )
        console.print(
            f"[bold]PACS:[/] built-in stand-in (not a PACS; keeps received SRs in "
            f"{settings.home / 'demo-pacs'}) at {settings.pacs}"
        )
    else:
        console.print(f"[bold]PACS:[/] {settings.pacs}")
    if settings.allowed_aes:  # the demo's own modality, sending from this machine
        demo_ct = AllowedAE(DEMO_SENDER_AE, "127.0.0.1")
        settings = dataclasses.replace(settings, allowed_aes=(*settings.allowed_aes, demo_ct))
    if "TRIAGE_PORT" not in os.environ:
        settings = dataclasses.replace(settings, port=0)  # any free port
    console.print(f"[bold]state:[/] {settings.home}")
    console.print("starting the node (Prefect's embedded API takes a few seconds)...")
    if web and settings.web_port is None:
        settings = dataclasses.replace(settings, web_port=8080)
    node = start_node(settings, web=web)
    try:
        login = demo_login(node.svc.catalogue) if node.web is not None else None
        code = drive_demo(settings, node.port, node.svc, count, console)
        if node.web is not None and login is not None:
            stop = StopSignal()
            console.print(
                f"[bold]worklist:[/] {node.web.url}/worklist - log in as [bold]{login[0]}[/] "
                f"with password [bold]{login[1]}[/] (an admin of this demo only). "
                "Ctrl-C stops it."
            )
            stop.wait()
        return code
    finally:
        node.stop()
        if standin is not None:
            standin.stop()


def demo_login(catalogue: Catalogue) -> tuple[str, str]:
    """The demo's admin account, with a fresh random password each run."""
    import secrets

    from triage.worklist.passwords import hash_password

    name, password = "demo", secrets.token_urlsafe(12)
    if catalogue.user(name) is None:
        catalogue.add_user(name, "admin", hash_password(password))
    else:
        catalogue.set_password(name, hash_password(password))
    return name, password


def drive_demo(settings: Settings, port: int, svc: Services, count: int, console: Console) -> int:
    """Send the demo studies to the node on ``port``, wait for their results, print the
    worklist; 0 when every study was triaged and its SR delivered."""
    studies = write_demo_studies(settings.home / "demo-studies", count)
    uids = {s.study_instance_uid for s in studies}
    expected_srs = len(studies)  # a result, or why there is none, for every study
    target = f"{settings.ae_title}@127.0.0.1:{port}"
    started = time.monotonic()
    columns = (
        TextColumn("{task.description:18}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        sent = progress.add_task("sending studies", total=len(studies))
        triaged = progress.add_task("triaging", total=len(studies))
        delivered = progress.add_task("delivering SRs", total=expected_srs)
        for study in studies:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "triage.app.cli",
                    "send",
                    str(study.folder),
                    "--to",
                    target,
                    "--calling-ae",
                    DEMO_SENDER_AE,
                ],
                check=True,
                capture_output=True,
                timeout=120,
            )
            progress.advance(sent)
        while time.monotonic() - started < DEMO_TIMEOUT_SECONDS:
            rows = [r for r in svc.catalogue.worklist() if r.study_instance_uid in uids]
            done = sum(r.state in (StudyState.TRIAGED, StudyState.NOT_ANALYSED) for r in rows)
            ok = sum(
                1
                for d in svc.catalogue.deliveries([DeliveryState.DELIVERED])
                if d.study_instance_uid in uids and d.kind == "sr"
            )
            progress.update(triaged, completed=done)
            progress.update(delivered, completed=ok)
            if done == len(studies) and ok >= expected_srs:
                break
            time.sleep(0.5)
    rows = svc.catalogue.worklist()
    console.print(worklist_table(rows, console.width))
    elapsed = time.monotonic() - started
    if done < len(studies) or ok < expected_srs:
        console.print(
            f"[red]demo incomplete after {elapsed:.0f}s: {done}/{len(studies)} "
            f"triaged, {ok}/{expected_srs} SRs delivered[/]"
        )
        return 1
    console.print(
        f"done in {elapsed:.0f}s: {len(studies)} studies triaged, {ok} SRs delivered "
        f"to {settings.pacs}. Run `triage worklist` to see this list again."
    )
    return 0
