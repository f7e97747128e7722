"""With the node's TLS files set, the web app speaks HTTPS only and its cookies are Secure."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from support.tls_certs import OPENSSL, make_pki
from support.web import PASSWORDS, csrf_of, running_web_app


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
def test_https_with_the_nodes_certificate_and_secure_cookies(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    with running_web_app(
        tmp_path / "home",
        TRIAGE_TLS_CERT=str(pki.node.cert),
        TRIAGE_TLS_KEY=str(pki.node.key),
    ) as web:
        assert web.url.startswith("https://127.0.0.1:")
        session = requests.Session()
        ca = str(pki.ca)  # per request: requests lets REQUESTS_CA_BUNDLE win over session.verify
        token = csrf_of(session.get(f"{web.url}/login", verify=ca, timeout=10).text)
        response = session.post(
            f"{web.url}/login",
            data={"name": "ada", "password": PASSWORDS["ada"], "csrf_token": token},
            allow_redirects=False,
            verify=ca,
            timeout=10,
        )
        assert response.status_code == 303
        assert "Secure" in response.headers["set-cookie"]
        plain = web.url.replace("https://", "http://")
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{plain}/healthz", timeout=5)
