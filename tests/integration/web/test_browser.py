"""The worklist in a real browser (Debian's Chromium driven by Playwright) against the real
node (`triage serve`, a child process) with Orthanc as the PACS and dcmtk's storescu as the
modality: log in, the urgent study first, a not-analysed study with its reason, a study sent
during the test appearing without a reload, the study page's key image and viewer link, log
out. Screenshots of both pages go to the test's folder (`docs/screenshots.py` writes the
README's)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.modality import storescu
from support.orthanc import free_port
from support.serve import ServeNode, triage_command
from support.waiting import wait_until

from triage.app.demo import DemoStudy, write_demo_studies
from triage.results import StudyState

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PASSWORD = "browser-test-password"
FINISHED = (StudyState.TRIAGED, StudyState.NOT_ANALYSED)


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> list[DemoStudy]:
    # urgent (lesion), routine, a third to send during the test, and one not analysable
    return write_demo_studies(
        tmp_path_factory.mktemp("studies"),
        count=3,
        unanalysable=1,
        shape=(128, 128, 40),
        spacing=(1.8, 1.8, 4.0),
    )


@pytest.fixture(scope="module")
def node(
    tmp_path_factory: pytest.TempPathFactory, orthanc: object, prefect_api: str
) -> Iterator[ServeNode]:
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian package chromium)")
    pytest.importorskip("playwright")
    home = tmp_path_factory.mktemp("web-node")
    serve = ServeNode(home, orthanc.node, prefect_api)  # type: ignore[attr-defined]
    serve.web_port = free_port()  # type: ignore[attr-defined]
    serve.env["TRIAGE_WEB_PORT"] = str(serve.web_port)  # type: ignore[attr-defined]
    serve.env["TRIAGE_VIEWER_URL"] = (
        orthanc.url + "/app/explorer.html#study?uid={study_uid}"  # type: ignore[attr-defined]
    )
    added = subprocess.run(
        [*triage_command(), "users", "add", "dr-lee", "--role", "admin"],
        input=PASSWORD + "\n",
        env=serve.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert added.returncode == 0, added.stderr
    serve.start()
    yield serve
    serve.stop()


def finished(node: ServeNode, *uids: str) -> bool:
    states = [node.catalogue.study_state(uid) for uid in uids]
    return all(s is not None and s[0] in FINISHED for s in states)


def test_the_worklist_in_a_browser(
    node: ServeNode, studies: list[DemoStudy], tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    urgent, routine, later, unanalysable = studies
    assert urgent.lesion and not routine.lesion and not unanalysable.analysable
    for study in (routine, unanalysable, urgent):
        assert storescu(study.folder, node.port).returncode == 0
    uids = (urgent.study_instance_uid, routine.study_instance_uid,
            unanalysable.study_instance_uid)  # fmt: skip
    wait_until(lambda: finished(node, *uids), 240, "the three studies to be triaged")
    url = f"http://127.0.0.1:{node.web_port}"  # type: ignore[attr-defined]

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{url}/worklist")
        expect(page).to_have_url(f"{url}/login?next=/worklist")  # no page without a login
        page.fill("input[name=name]", "dr-lee")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        expect(page).to_have_url(f"{url}/worklist")

        rows = page.locator("#worklist-rows tr")
        first = rows.nth(0)
        expect(first).to_contain_text(urgent.accession_number)
        expect(first.locator(".badge")).to_have_text("urgent")
        not_analysed = page.locator(f"tr[data-study='{unanalysable.study_instance_uid}']")
        expect(not_analysed.locator(".badge")).to_have_text("not analysed")
        assert not_analysed.locator(".notes").inner_text().strip(), "no reason shown"
        page.screenshot(path=str(tmp_path / "worklist.png"), full_page=True)

        # a study sent now appears without a reload (the page marks itself to tell)
        page.evaluate("window.notReloaded = true")
        assert storescu(later.folder, node.port).returncode == 0
        expect(page.locator(f"tr[data-study='{later.study_instance_uid}']")).to_be_visible(
            timeout=60_000
        )
        assert page.evaluate("window.notReloaded === true")

        page.click(f"a[href='/studies/{urgent.study_instance_uid}']")
        image = page.locator("#key-image")
        expect(image).to_be_visible()
        page.wait_for_function(
            "document.getElementById('key-image').naturalWidth > 0", timeout=60_000
        )
        viewer = page.locator("#viewer-link")
        assert urgent.study_instance_uid in (viewer.get_attribute("href") or "")
        expect(page.locator("body")).to_contain_text("ich_classifier")
        page.screenshot(path=str(tmp_path / "study.png"), full_page=True)

        page.click("nav >> text=Models")  # versions and roles, evaluation, live scores
        expect(page.locator("body")).to_contain_text("ich_classifier")
        expect(page.locator("body")).to_contain_text("lesion_segmenter")
        assert page.locator("svg.plot").count() >= 2  # a live score histogram per version

        page.click("#logout")
        expect(page).to_have_url(f"{url}/login")
        page.goto(f"{url}/worklist")
        expect(page).to_have_url(f"{url}/login?next=/worklist")
        browser.close()
    assert (tmp_path / "worklist.png").stat().st_size > 10_000
    viewers = {e.who for e in node.catalogue.access_log(study_uid=urgent.study_instance_uid)}
    assert "dr-lee" in viewers
