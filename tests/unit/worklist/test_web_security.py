"""The web app's doors: nothing without a login but the health endpoints, wrong passwords
refused and rate-limited, changes need their CSRF token and the right role, cookie flags, and
who viewed which study is audited. Against the real server on a free port."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support.web import PASSWORDS, WebApp, add_study, csrf_of, running_web_app

from triage.results import Priority
from triage.worklist.passwords import hash_password

URGENT = "1.2.826.0.1.3680043.10.1.1"
BOB = "bobs-password-12"


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebApp]:
    with running_web_app(tmp_path_factory.mktemp("web")) as app:
        add_study(app.catalogue, URGENT, "ACC-URGENT", Priority.URGENT, 0.97)
        yield app


@pytest.mark.parametrize(
    "path",
    ["/worklist", "/worklist/rows", f"/studies/{URGENT}", "/models", "/outbox", "/metrics",
     "/api/worklist", f"/api/studies/{URGENT}", "/api/openapi.json", "/api/docs",
     f"/studies/{URGENT}/key-image.png"],
)  # fmt: skip
def test_nothing_without_a_login(web: WebApp, path: str) -> None:
    response = requests.get(web.url + path, allow_redirects=False, timeout=10)
    if path.startswith(("/api/", "/metrics")):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Basic")
    else:
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login?next=")


def test_the_health_endpoints_need_no_login(web: WebApp) -> None:
    assert requests.get(f"{web.url}/healthz", timeout=10).json() == {"status": "alive"}
    ready = requests.get(f"{web.url}/readyz", timeout=30)
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"


def test_a_change_without_login_is_refused(web: WebApp) -> None:
    response = requests.post(f"{web.url}/api/studies/{URGENT}/rerun", json={}, timeout=10)
    assert response.status_code == 401


def test_the_session_cookie_flags(web: WebApp) -> None:
    session = requests.Session()
    token = csrf_of(session.get(f"{web.url}/login", timeout=10).text)
    response = session.post(
        f"{web.url}/login",
        data={"name": "ada", "password": PASSWORDS["ada"], "csrf_token": token},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 303
    cookie = next(c for c in response.headers["set-cookie"].split(", ") if "triage_session=" in c)
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie or "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain http here; over TLS the cookie is Secure


def test_a_wrong_password_is_refused_and_then_rate_limited(web: WebApp) -> None:
    web.catalogue.add_user("bob", "engineer", hash_password(BOB))
    session = requests.Session()
    token = csrf_of(session.get(f"{web.url}/login", timeout=10).text)

    def attempt(password: str) -> requests.Response:
        return session.post(
            f"{web.url}/login",
            data={"name": "bob", "password": password, "csrf_token": token},
            allow_redirects=False,
            timeout=10,
        )

    for _ in range(5):
        refused = attempt("not-the-password")
        assert refused.status_code == 401
        assert "wrong name or password" in refused.text
    # the sixth try is refused without looking at the password, even the right one
    limited = attempt(BOB)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "900"
    failures = [e for e in web.catalogue.access_log(who="bob") if e.action == "login failed"]
    assert len(failures) == 5
    # so is basic auth for the same account
    basic = requests.get(f"{web.url}/api/worklist", auth=("bob", BOB), timeout=10)
    assert basic.status_code == 429
    # another account is not locked out by it
    assert web.login("ada").get(f"{web.url}/worklist", timeout=10).status_code == 200


def test_a_login_form_without_its_token_is_refused(web: WebApp) -> None:
    response = requests.post(
        f"{web.url}/login",
        data={"name": "ada", "password": PASSWORDS["ada"]},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 200
    assert "out of date" in response.text
    assert "triage_session" not in response.headers.get("set-cookie", "")


def test_a_change_without_the_csrf_token_is_refused(web: WebApp) -> None:
    admin = web.login("root")
    rerun = f"{web.url}/studies/{URGENT}/rerun"
    assert admin.post(rerun, allow_redirects=False, timeout=10).status_code == 403
    wrong = admin.post(rerun, data={"csrf_token": "forged"}, allow_redirects=False, timeout=10)
    assert wrong.status_code == 403
    assert web.catalogue.study_state(URGENT)[0] == "triaged"
    ok = admin.post(rerun, data={"csrf_token": web.csrf(admin)}, allow_redirects=False, timeout=10)
    assert ok.status_code == 303
    assert web.catalogue.study_state(URGENT)[0] == "receiving"
    assert any(e.action == "rerun" for e in web.catalogue.access_log(study_uid=URGENT))
    web.catalogue.claim_for_triage(URGENT)  # put it back as it was for the other tests
    generation = web.catalogue.study_state(URGENT)[1]
    web.catalogue.finish_triage(URGENT, generation, [], Priority.URGENT, None)


def test_a_clinician_cannot_rerun(web: WebApp) -> None:
    clinician = web.login("ada")
    response = clinician.post(
        f"{web.url}/studies/{URGENT}/rerun",
        data={"csrf_token": web.csrf(clinician)},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 403
    assert "admin" in response.text
    by_api = requests.post(
        f"{web.url}/api/studies/{URGENT}/rerun", json={}, auth=("ada", PASSWORDS["ada"]),
        timeout=10,
    )  # fmt: skip
    assert by_api.status_code == 403
    assert web.catalogue.study_state(URGENT)[0] == "triaged"


def test_a_change_by_basic_auth_must_be_json(web: WebApp) -> None:
    """A cross-site form cannot send JSON, though a browser may send cached credentials."""
    response = requests.post(
        f"{web.url}/api/studies/{URGENT}/rerun",
        data={"x": "1"},
        auth=("root", PASSWORDS["root"]),
        timeout=10,
    )
    assert response.status_code == 403


def test_clinicians_see_no_models_page_nor_shadow_results(web: WebApp) -> None:
    clinician = web.login("ada")
    assert clinician.get(f"{web.url}/models", timeout=10).status_code == 403
    assert clinician.get(f"{web.url}/outbox", timeout=10).status_code == 403
    assert web.login("eve").get(f"{web.url}/models", timeout=10).status_code == 200


def test_who_viewed_which_study_is_recorded(web: WebApp) -> None:
    web.login("ada").get(f"{web.url}/studies/{URGENT}", timeout=30)
    auth = "Basic " + base64.b64encode(f"eve:{PASSWORDS['eve']}".encode()).decode()
    requests.get(f"{web.url}/api/studies/{URGENT}", headers={"Authorization": auth}, timeout=30)
    viewers = {
        e.who for e in web.catalogue.access_log(study_uid=URGENT) if e.action == "view study"
    }
    assert {"ada", "eve"} <= viewers


def test_logout_ends_the_session(web: WebApp) -> None:
    session = web.login("ada")
    token = web.csrf(session)
    assert session.post(f"{web.url}/logout", data={"csrf_token": token}, timeout=10).ok
    again = session.get(f"{web.url}/worklist", allow_redirects=False, timeout=10)
    assert again.status_code == 303


def test_a_redirect_after_login_stays_on_this_site(web: WebApp, tmp_path: Path) -> None:
    session = requests.Session()
    token = csrf_of(session.get(f"{web.url}/login?next=//evil.example/", timeout=10).text)
    response = session.post(
        f"{web.url}/login",
        data={"name": "ada", "password": PASSWORDS["ada"], "csrf_token": token,
              "next": "https://evil.example/"},
        allow_redirects=False,
        timeout=10,
    )  # fmt: skip
    assert response.headers["location"] == "/worklist"
