"""Screenshots of the web worklist and a study page for the README: `make screenshots`
(or `.venv/bin/python docs/screenshots.py`).

It runs the demo (synthetic head CTs, the built-in stand-in PACS, a node with its web app on a
free port), logs in with a real browser (Debian's Chromium through Playwright) and writes
docs/screenshots/worklist.png and docs/screenshots/study.png.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "docs" / "screenshots"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    from playwright.sync_api import sync_playwright

    from triage.app.demo import demo_login, drive_demo
    from triage.app.node import start_node
    from triage.config import DicomNode, load_settings
    from triage.synthetic.standin_pacs import StandInPacs

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("Chromium is not installed: apt-get install chromium")
    console = Console()
    home = Path(tempfile.mkdtemp(prefix="triage-screenshots-"))
    os.environ.setdefault("TRIAGE_LOG_LEVEL", "WARNING")
    standin = StandInPacs(home / "pacs")
    settings = dataclasses.replace(
        load_settings({**os.environ, "TRIAGE_HOME": str(home), "TRIAGE_QUIET_SECONDS": "2"}),
        port=0,
        web_port=free_port(),
        pacs=DicomNode(standin.ae_title, "127.0.0.1", standin.start()),
        viewer_url="http://127.0.0.1:8042/ui/app/#/study?StudyInstanceUID={study_uid}",
    )
    node = start_node(settings, web=True)
    try:
        name, password = demo_login(node.svc.catalogue)
        if drive_demo(settings, node.port, node.svc, 6, console) != 0:
            return 1
        rows = node.svc.catalogue.worklist()
        urgent = next(r for r in rows if r.priority == "urgent")
        assert node.web is not None
        OUT.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1360, "height": 760})
            page.goto(f"{node.web.url}/login")
            page.fill("input[name=name]", name)
            page.fill("input[name=password]", password)
            page.click("button[type=submit]")
            page.wait_for_url("**/worklist")
            page.screenshot(path=str(OUT / "worklist.png"))
            page.goto(f"{node.web.url}/studies/{urgent.study_instance_uid}")
            page.wait_for_function("document.getElementById('key-image').naturalWidth > 0")
            page.screenshot(path=str(OUT / "study.png"), full_page=True)
            browser.close()
        console.print(f"wrote {OUT / 'worklist.png'} and {OUT / 'study.png'}")
        return 0
    finally:
        node.stop()
        standin.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
