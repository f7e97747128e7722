"""Who is asking: the login behind a request (session cookie or HTTP basic auth), its role,
CSRF checks on changes, and the rate limit on failed logins.

- A browser logs in with the form and gets a session cookie (HttpOnly, SameSite=Lax, Secure
  over HTTPS); the catalogue keeps only the token's SHA-256, so logins hold across every web
  process sharing it and a logout ends the session everywhere.
- A script uses HTTP basic auth with the same accounts. A change by basic auth must be sent as
  JSON: a cross-site form cannot send that, though a browser may attach cached credentials.
- A change by session carries the session's CSRF token (form field ``csrf_token`` or header
  ``X-CSRF-Token``); the login form has its own double-submitted token.
- Failed logins are audit events; after `MAX_FAILURES` for one name (or `MAX_CLIENT_FAILURES`
  from one address) in `FAILURE_WINDOW`, logins are refused until the window has passed.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from datetime import timedelta

from fastapi import Request

from triage.catalogue import Catalogue, Login, utcnow
from triage.worklist.passwords import verify_password

COOKIE = "triage_session"
LOGIN_CSRF_COOKIE = "triage_login_csrf"
RANKS = {"clinician": 0, "engineer": 1, "admin": 2}
MAX_FAILURES = 5
MAX_CLIENT_FAILURES = 20
FAILURE_WINDOW = timedelta(minutes=15)


class NotLoggedIn(Exception):
    """No valid session or credentials: a page redirects to the login form, the API says 401."""


class Forbidden(Exception):
    """Logged in, but the role may not do this (or a change without its CSRF token)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class TooManyFailures(Exception):
    """Logins refused for a while after repeated failures."""


@dataclass(frozen=True)
class Caller:
    """The person behind a request and how they proved it."""

    login: Login
    by_session: bool

    @property
    def name(self) -> str:
        return self.login.user

    @property
    def role(self) -> str:
        return self.login.role

    def may(self, role: str) -> bool:
        return RANKS.get(self.role, -1) >= RANKS[role]


def client_of(request: Request) -> str:
    return request.client.host if request.client else ""


def check_rate(catalogue: Catalogue, name: str, client: str) -> None:
    since = utcnow() - FAILURE_WINDOW
    if (
        catalogue.failed_logins(since, name=name) >= MAX_FAILURES
        or catalogue.failed_logins(since, client=client) >= MAX_CLIENT_FAILURES
    ):
        raise TooManyFailures()


def authenticate(catalogue: Catalogue, name: str, password: str, client: str) -> Login | None:
    """Check a name and password (rate-limited); a failure is recorded. None: refused."""
    check_rate(catalogue, name, client)
    account = catalogue.user(name)
    if not verify_password(account.password_hash if account else None, password):
        catalogue.record_access(name or "-", "login failed", client=client)
        return None
    assert account is not None
    return Login(account.name, account.role, "", utcnow())


def caller_of(request: Request, catalogue: Catalogue, session_hours: float) -> Caller:
    """The caller of a request, from its session cookie or its basic-auth header."""
    token = request.cookies.get(COOKIE)
    if token:
        login = catalogue.session_login(token, hours=session_hours)
        if login is not None:
            return Caller(login, by_session=True)
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            name, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise NotLoggedIn() from None
        login = authenticate(catalogue, name, password, client_of(request))
        if login is not None:
            return Caller(login, by_session=False)
    raise NotLoggedIn()


async def check_change(request: Request, caller: Caller) -> None:
    """A change (POST) must prove it comes from our own page (session) or a script (JSON)."""
    if not caller.by_session:
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise Forbidden("a change by basic auth must be sent as application/json")
        return
    sent = request.headers.get("x-csrf-token")
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get("csrf_token")
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent, caller.login.csrf_token):
        raise Forbidden("the form is out of date or not ours (CSRF token missing or wrong)")


def require(caller: Caller, role: str) -> None:
    if not caller.may(role):
        raise Forbidden(f"this needs the {role} role; {caller.name} is a {caller.role}")
