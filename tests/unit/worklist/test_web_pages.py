"""The web app's pages and JSON API over a real catalogue, through the real server: the same
order and items as `triage worklist --json`, filters, the study page, metrics, the outbox."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from support.web import PASSWORDS, WebApp, add_study, running_web_app

from triage.results import Priority
from triage.worklist.view import worklist_json

ROOT = "1.2.826.0.1.3680043.10.2"
URGENT, ROUTINE, FAILED, PENDING = (f"{ROOT}.{i}" for i in (1, 2, 3, 4))
VIEWER = "https://viewer.example/study?uid={study_uid}"


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebApp]:
    with running_web_app(tmp_path_factory.mktemp("pages"), TRIAGE_VIEWER_URL=VIEWER) as app:
        add_study(app.catalogue, ROUTINE, "ACC-ROUTINE", Priority.ROUTINE, 0.1)
        add_study(
            app.catalogue, FAILED, "ACC-FAILED", Priority.NOT_ANALYSED,
            reason="no series matches the model's rules",
        )  # fmt: skip
        add_study(app.catalogue, URGENT, "ACC-URGENT", Priority.URGENT, 0.97)
        add_study(app.catalogue, PENDING, "ACC-PENDING", None)
        yield app


def test_the_api_worklist_is_the_cli_json(web: WebApp) -> None:
    got = requests.get(f"{web.url}/api/worklist", auth=("root", PASSWORDS["root"]), timeout=10)
    assert got.status_code == 200
    assert got.json() == json.loads(json.dumps(worklist_json(web.catalogue.worklist())))
    assert got.json()[0]["study_instance_uid"] == URGENT
    assert got.headers["cache-control"] == "no-store"


def test_the_worklist_page_orders_and_explains(web: WebApp) -> None:
    page = web.login("ada").get(f"{web.url}/worklist", timeout=10).text
    order = [page.index(f'data-study="{uid}"') for uid in (URGENT, ROUTINE, FAILED, PENDING)]
    assert order == sorted(order)  # urgent, then by arrival; not analysed with routine
    assert "no series matches the model&#39;s rules" in page
    assert ">pending<" in page
    assert "worklist.js" in page


def test_the_worklist_filters(web: WebApp) -> None:
    session = web.login("ada")

    def shown(query: str) -> set[str]:
        html = session.get(f"{web.url}/worklist/rows?{query}", timeout=10).text
        return {uid for uid in (URGENT, ROUTINE, FAILED, PENDING) if uid in html}

    assert shown("state=urgent") == {URGENT}
    assert shown("state=not+analysed") == {FAILED}
    assert shown("state=pending") == {PENDING}
    assert shown("modality=MR") == set()
    assert shown("modality=CT&hours=1") == {URGENT, ROUTINE, FAILED, PENDING}


def test_the_study_page(web: WebApp) -> None:
    html = web.login("ada").get(f"{web.url}/studies/{URGENT}", timeout=30).text
    assert "ACC-URGENT" in html and "ich_classifier" in html and "0.97" in html
    assert "First image received" in html and "Triaged" in html
    assert 'href="https://viewer.example/study?uid=' + URGENT + '"' in html
    assert 'id="shadow"' not in html  # clinicians see no shadow results
    assert "Triage again" not in html  # nor the admins' actions
    admin = web.login("root").get(f"{web.url}/studies/{URGENT}", timeout=30).text
    assert "Triage again" in admin and 'id="shadow"' in admin


def test_an_unknown_study_is_404(web: WebApp) -> None:
    session = web.login("ada")
    assert session.get(f"{web.url}/studies/1.2.3.404", timeout=10).status_code == 404
    api = requests.get(f"{web.url}/api/studies/1.2.3.404", auth=("ada", PASSWORDS["ada"]),
                       timeout=10)  # fmt: skip
    assert api.status_code == 404


def test_the_api_study_has_its_timeline_and_deliveries(web: WebApp) -> None:
    got = requests.get(
        f"{web.url}/api/studies/{URGENT}", auth=("eve", PASSWORDS["eve"]), timeout=10
    ).json()
    assert got["priority"] == "urgent"
    assert got["timeline"]["triaged_at"].endswith("Z")
    assert got["deliveries"] == []


def test_metrics_move_when_a_study_arrives(web: WebApp) -> None:
    def studies_receiving() -> float:
        text = requests.get(f"{web.url}/metrics", auth=("eve", PASSWORDS["eve"]), timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "triage_studies" and sample.labels.get("state") == "receiving":
                    return sample.value
        raise AssertionError("no triage_studies{state=receiving} in /metrics")

    before = studies_receiving()
    add_study(web.catalogue, f"{ROOT}.99", "ACC-NEW", None)
    assert studies_receiving() == before + 1


def test_the_openapi_description(web: WebApp) -> None:
    schema = requests.get(
        f"{web.url}/api/openapi.json", auth=("ada", PASSWORDS["ada"]), timeout=10
    ).json()
    assert "/api/worklist" in schema["paths"]
    assert "/api/studies/{study_uid}" in schema["paths"]
    docs = web.login("ada").get(f"{web.url}/api/docs", timeout=10).text
    assert "/api/worklist" in docs


def test_the_outbox_page_for_admins(web: WebApp) -> None:
    admin = web.login("root")
    assert "The outbox is empty" in admin.get(f"{web.url}/outbox", timeout=10).text
    token = web.csrf(admin)
    done = admin.post(f"{web.url}/outbox/retry", data={"csrf_token": token}, timeout=10)
    assert done.status_code == 200 and "queued again" in done.text
