"""An admin accepts a held downgrade from the web app (the page's form or the API), as `triage
ack` does: the held result goes out, the study takes the lower priority, the person is named
in the audit; a clinician may not. Over a real store and catalogue and the real server; the
triage runs go through the pipeline's own report and finish steps (no model runs)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from pydicom.sr.codedict import codes
from support.factories import phantom_ct_series
from support.web import PASSWORDS, ROLES

from triage.app import pipeline
from triage.app.services import Services
from triage.app.web_app import start_web
from triage.catalogue import Catalogue
from triage.config import load_settings
from triage.dimse import SUCCESS
from triage.receive.receiver import Receiver
from triage.results import ModelResult, Priority
from triage.store import LocalStore
from triage.worklist.passwords import hash_password

MODEL, VERSION = "ich-detector", "1.0.0"


def analysed(series: str, probability: float) -> pipeline.Analysis:
    result = ModelResult(
        MODEL, VERSION, codes.SCT.IntracranialHemorrhage, probability, 0.5,
        Priority.URGENT if probability >= 0.5 else Priority.ROUTINE, series,
    )  # fmt: skip
    return pipeline.Analysis(MODEL, result, model_version=VERSION, series_instance_uid=series)


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[str, str, Services]]:
    """A study triaged urgent, then routine on a re-run: the downgrade is held."""
    settings = load_settings({"TRIAGE_HOME": str(tmp_path), "TRIAGE_PACS": "PACS@127.0.0.1:1"})
    svc = Services(settings, LocalStore(settings.store_path), Catalogue(settings.database_url))
    receiver = Receiver(svc.store, svc.catalogue, "TRIAGE")
    images = phantom_ct_series("web-ack", shape=(16, 16, 4))
    for ds in images:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        assert receiver.accept(buffer.getvalue()) == SUCCESS
    study, series = str(images[0].StudyInstanceUID), str(images[0].SeriesInstanceUID)
    for probability in (0.9, 0.1):
        svc.catalogue.reopen(study)
        generation = svc.catalogue.claim_for_triage(study)
        assert generation is not None
        analyses = [analysed(series, probability)]
        plan = pipeline.report(svc, study, analyses)
        pipeline.finish(svc, study, generation, analyses, plan, {})
    for name, password in PASSWORDS.items():
        svc.catalogue.add_user(name, ROLES[name], hash_password(password))
    server = start_web(settings, svc.catalogue, svc.store, port=0)
    yield server.url, study, svc
    server.stop()
    svc.catalogue.close()


def test_an_admin_accepts_a_held_downgrade_through_the_api(
    held: tuple[str, str, Services],
) -> None:
    url, study, svc = held
    (row,) = svc.catalogue.worklist(study)
    assert (row.priority, row.held_priority) == ("urgent", "routine")
    ack = f"{url}/api/studies/{study}/ack"
    refused = requests.post(ack, json={"reason": "x"}, auth=("ada", PASSWORDS["ada"]), timeout=10)
    assert refused.status_code == 403
    done = requests.post(
        ack, json={"reason": "reviewed: no bleed"}, auth=("root", PASSWORDS["root"]), timeout=10
    )
    assert done.status_code == 200, done.text
    assert done.json()["detail"] == "urgent -> routine, accepted by root"
    (row,) = svc.catalogue.worklist(study)
    assert (row.priority, row.held_priority) == ("routine", None)
    (audit,) = svc.catalogue.acknowledgements()
    assert (audit.who, audit.reason) == ("root", "reviewed: no bleed")
    assert [e.action for e in svc.catalogue.access_log(study_uid=study)][0] == "ack"
    again = requests.post(
        ack, json={"reason": "again"}, auth=("root", PASSWORDS["root"]), timeout=10
    )
    assert again.status_code == 400  # nothing held any more: said, not a server error


def test_the_study_page_offers_the_acknowledgement_to_admins(
    held: tuple[str, str, Services],
) -> None:
    url, study, _svc = held
    session = requests.Session()
    form = session.get(f"{url}/login", timeout=10).text
    token = form.split('name="csrf_token" value="')[1].split('"')[0]
    session.post(
        f"{url}/login",
        data={"name": "root", "password": PASSWORDS["root"], "csrf_token": token},
        timeout=10,
    )
    page = session.get(f"{url}/studies/{study}", timeout=30).text
    assert f'action="/studies/{study}/ack"' in page
    csrf = page.split('name="csrf_token" value="')[1].split('"')[0]
    done = session.post(
        f"{url}/studies/{study}/ack", data={"csrf_token": csrf, "reason": "reviewed"}, timeout=10
    )
    assert done.status_code == 200 and "urgent -&gt; routine" in done.text
