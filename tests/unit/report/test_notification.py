"""Urgent findings reach the outbox as notifications: one row per configured channel beside the
urgent result's SR, none for a routine one, none again for the same result; what they say."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydicom.sr.codedict import codes
from support.notifications import ACCESSION, PATIENT_ID, SECRET, NotifyingNode

from triage.config import load_settings
from triage.errors import ConfigError
from triage.report.destinations import shown_destination, shown_url
from triage.report.notification import is_urgent, notification_key
from triage.results import ModelResult, Priority, Role

WEBHOOK = "https://hooks.example.org/triage/T0KEN?key=abc"
BOTH = {
    "TRIAGE_NOTIFY_WEBHOOK": WEBHOOK,
    "TRIAGE_NOTIFY_WEBHOOK_SECRET": SECRET,
    "TRIAGE_NOTIFY_SMTP": "mail.example.org:587",
    "TRIAGE_NOTIFY_FROM": "triage@hospital.example",
    "TRIAGE_NOTIFY_TO": "neuro-oncall@hospital.example,ct-desk@hospital.example",
    "TRIAGE_PACS": "PACS@127.0.0.1:4242",
    "TRIAGE_WEB_URL": "https://triage.hospital.example",
}


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Any]:
    made: list[NotifyingNode] = []

    def make(**env: str) -> NotifyingNode:
        made.append(NotifyingNode(tmp_path / f"home{len(made)}", **env))
        return made[-1]

    yield make
    for node in made:
        node.close()


def test_an_urgent_run_queues_one_notification_per_channel_beside_its_sr(make_node: Any) -> None:
    node = make_node(**BOTH)
    study = node.receive("notify-urgent")
    sr = node.triage(study, 0.93)
    rows = node.notify_rows()
    assert sorted(r.destination for r in rows) == [
        "smtp:mail.example.org:587",
        f"webhook:{WEBHOOK}",
    ]
    assert {(r.sop_instance_uid, r.key, r.study_instance_uid) for r in rows} == {
        (sr, notification_key(study, sr), study)
    }
    # the SR still goes to the PACS; the notification is one more object of the revision
    assert {r.kind for r in node.catalogue.deliveries()} == {"sr", "notify"}

    payload = json.loads(node.store.get(notification_key(study, sr)))
    assert payload["event"] == "urgent finding"
    assert payload["priority"] == "urgent"
    assert payload["finding"] == "Intracranial hemorrhage"
    assert payload["finding_code"] == {
        "value": "1386000",
        "scheme": "SCT",
        "meaning": "Intracranial hemorrhage (disorder)",
    }
    assert payload["probability"] == pytest.approx(0.93)
    assert payload["threshold"] == 0.5
    assert (payload["model"], payload["model_version"]) == ("ich-detector", "1.0.0")
    assert payload["accession_number"] == ACCESSION
    assert payload["study_description"] == "CT head without contrast"
    assert payload["modality"] == "CT"
    assert payload["study_instance_uid"] == study
    assert payload["study_page"] == f"https://triage.hospital.example/studies/{study}"
    assert payload["sr_sop_instance_uid"] == sr
    assert datetime.fromisoformat(payload["time"]).tzinfo is not None
    assert payload["subject"] == (
        f"URGENT: Intracranial hemorrhage suspected, accession {ACCESSION}"
    )
    assert payload["study_page"] in payload["text"]
    # no patient identifiers unless asked for
    text = json.dumps(payload)
    assert "patient_name" not in payload
    assert "Doe" not in text and "Jane" not in text and PATIENT_ID not in text


def test_a_routine_run_queues_no_notification(make_node: Any) -> None:
    node = make_node(**BOTH)
    study = node.receive("notify-routine")
    node.triage(study, 0.12)
    assert node.notify_rows() == []
    assert [r.kind for r in node.catalogue.deliveries()] == ["sr"]


def test_the_same_result_again_is_not_announced_again_a_changed_one_is(make_node: Any) -> None:
    node = make_node(**BOTH)
    study = node.receive("notify-rerun")
    first = node.triage(study, 0.93)
    assert len(node.notify_rows()) == 2
    before = node.catalogue.deliveries()
    assert node.triage(study, 0.93, again=True) == first  # the same result, the same SR
    assert node.catalogue.deliveries() == before
    # a changed result (a new revision, still urgent) is a new notification, once per channel
    second = node.triage(study, 0.97, again=True)
    assert second != first
    assert sorted((r.sop_instance_uid, r.destination) for r in node.notify_rows()) == sorted(
        (sr, d)
        for sr in (first, second)
        for d in ("smtp:mail.example.org:587", f"webhook:{WEBHOOK}")
    )


def test_a_routine_result_that_turns_urgent_is_announced_then(make_node: Any) -> None:
    node = make_node(**BOTH)
    study = node.receive("notify-late")
    node.triage(study, 0.2)  # routine first: nothing to tell
    assert node.notify_rows() == []
    urgent = node.triage(study, 0.9, again=True)  # e.g. late images: a new, urgent revision
    assert sorted((r.sop_instance_uid, r.destination) for r in node.notify_rows()) == [
        (urgent, "smtp:mail.example.org:587"),
        (urgent, f"webhook:{WEBHOOK}"),
    ]


def test_without_a_channel_an_urgent_result_queues_no_notification(make_node: Any) -> None:
    node = make_node(TRIAGE_PACS="PACS@127.0.0.1:4242")
    study = node.receive("notify-none")
    node.triage(study, 0.99)
    assert node.notify_rows() == []


def test_the_patient_name_only_when_asked_for(make_node: Any) -> None:
    node = make_node(TRIAGE_NOTIFY_PATIENT_NAME="yes", **BOTH)
    study = node.receive("notify-name")
    sr = node.triage(study, 0.93)
    payload = json.loads(node.store.get(notification_key(study, sr)))
    assert payload["patient_name"] == "Doe, Jane"
    assert "Patient:      Doe, Jane" in payload["text"]
    assert PATIENT_ID not in json.dumps(payload)  # the patient ID never


def test_notify_patient_name_setting(tmp_path: Path) -> None:
    home = {"TRIAGE_HOME": str(tmp_path)}
    assert load_settings(home).notify_patient_name is False
    assert load_settings({**home, "TRIAGE_NOTIFY_PATIENT_NAME": "true"}).notify_patient_name
    with pytest.raises(ConfigError, match="TRIAGE_NOTIFY_PATIENT_NAME"):
        load_settings({**home, "TRIAGE_NOTIFY_PATIENT_NAME": "perhaps"})


def test_only_an_active_models_urgent_result_is_announced() -> None:
    urgent = ModelResult(
        "ich-detector", "1.0.0", codes.SCT.IntracranialHemorrhage, 0.9, 0.5, Priority.URGENT, "1.2"
    )
    assert is_urgent(urgent)
    assert not is_urgent(dataclasses.replace(urgent, role=Role.SHADOW))
    assert not is_urgent(dataclasses.replace(urgent, priority=Priority.ROUTINE))
    assert not is_urgent(None)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example.org/services/T0/B0/XYZ", "https://hooks.example.org/..."),
        (
            "https://user:pw@hooks.example.org:8443/h?token=abc",
            "https://hooks.example.org:8443/...",
        ),
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
        ("http://[::1]:9000/hook", "http://[::1]:9000/..."),
    ],
)
def test_a_webhook_url_is_shown_without_what_may_be_secret(url: str, shown: str) -> None:
    assert shown_url(url) == shown
    assert shown_destination(f"webhook:{url}") == f"webhook:{shown}"


def test_other_destinations_are_shown_as_they_are() -> None:
    for destination in ("smtp:mail.example.org:587", "PACS@10.0.0.1:104", "hl7:ris:2575"):
        assert shown_destination(destination) == destination
