"""The web app over a real catalogue and store, served on a free port, with one account of
each role and a few studies (urgent, routine, not analysed, pending)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from pydicom.sr.codedict import codes

from triage.app.web_app import start_web
from triage.catalogue import Catalogue, InstanceRecord
from triage.config import Settings, load_settings
from triage.results import ModelResult, Priority
from triage.store import ObjectStore, open_store
from triage.worklist.passwords import hash_password
from triage.worklist.server import WebServer

PASSWORDS = {
    "ada": "clinician-password-1",
    "eve": "engineer-password-1",
    "root": "admin-password-0001",
}
ROLES = {"ada": "clinician", "eve": "engineer", "root": "admin"}


@dataclass
class WebApp:
    url: str
    settings: Settings
    catalogue: Catalogue
    store: ObjectStore
    server: WebServer

    def login(self, name: str) -> requests.Session:
        """A browser-like session logged in through the form."""
        session = requests.Session()
        form = session.get(f"{self.url}/login", timeout=10)
        token = csrf_of(form.text)
        done = session.post(
            f"{self.url}/login",
            data={"name": name, "password": PASSWORDS[name], "csrf_token": token},
            timeout=10,
        )
        assert done.status_code == 200 and "/worklist" in done.url, done.text[:300]
        return session

    def csrf(self, session: requests.Session) -> str:
        return csrf_of(session.get(f"{self.url}/worklist", timeout=10).text)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def add_study(
    catalogue: Catalogue,
    uid: str,
    accession: str,
    outcome: Priority | None,
    probability: float = 0.9,
    reason: str | None = None,
) -> None:
    """A study of two CT images; triaged with ``outcome`` (None: still receiving)."""
    for i in (1, 2):
        catalogue.record_instance(
            InstanceRecord(
                study_instance_uid=uid,
                series_instance_uid=f"{uid}.1",
                sop_instance_uid=f"{uid}.1.{i}",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                key=f"raw/{uid}/{uid}.1/{uid}.1.{i}.dcm",
                size=100,
                modality="CT",
                body_part="HEAD",
                accession_number=accession,
                study_description="CT head without contrast",
            )
        )
    if outcome is None:
        return
    generation = catalogue.claim_for_triage(uid)
    assert generation is not None
    results = []
    if outcome is not Priority.NOT_ANALYSED:
        results.append(
            ModelResult(
                model_name="ich_classifier",
                model_version="1.0.0",
                finding=codes.SCT.IntracranialHemorrhage,
                probability=probability,
                threshold=0.5,
                priority=outcome,
                series_instance_uid=f"{uid}.1",
            )
        )
    assert catalogue.finish_triage(uid, generation, results, outcome, reason)


@contextmanager
def running_web_app(home: Path, **env: str) -> Iterator[WebApp]:
    settings = load_settings(
        {"TRIAGE_HOME": str(home), "TRIAGE_DEVICE": "cpu", "TRIAGE_WEB_PORT": "off", **env}
    )
    home.mkdir(parents=True, exist_ok=True)
    catalogue = Catalogue(settings.database_url)
    store = open_store(settings.store)
    for name, password in PASSWORDS.items():
        catalogue.add_user(name, ROLES[name], hash_password(password))
    server = start_web(settings, catalogue, store, port=0)
    try:
        yield WebApp(server.url, settings, catalogue, store, server)
    finally:
        server.stop()
        catalogue.close()
