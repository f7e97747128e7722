"""The web app's people: accounts (`triage users`), their login sessions, and the access audit.

The catalogue keeps what the web app must share between its processes: a password's hash
(hashing is the web app's, ``triage.worklist.passwords``), a session token's SHA-256, and
every access worth auditing. Failed logins are audit events too, so the rate limit on them
holds across every web process that shares the catalogue.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from triage.catalogue.database import Database
from triage.catalogue.tables import AccessEvent, User, WebSession, utcnow
from triage.errors import TriageError

ROLES = ("clinician", "engineer", "admin")


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    password_hash: str
    created_at: datetime
    password_changed_at: datetime


@dataclass(frozen=True)
class Login:
    """A session that holds: whose it is and the CSRF token its changes must carry."""

    user: str
    role: str
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True)
class AccessRecord:
    at: datetime
    who: str
    action: str
    study_instance_uid: str | None
    client: str
    detail: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _account(u: User) -> Account:
    return Account(u.name, u.role, u.password_hash, u.created_at, u.password_changed_at)


class Accounts(Database):
    """Who may log in, their sessions and what they looked at."""

    def add_user(self, name: str, role: str, password_hash: str) -> None:
        if role not in ROLES:
            raise TriageError(f"role {role!r}: choose {', '.join(ROLES)}")

        def work(s: Session) -> None:
            if s.scalar(select(User).where(User.name == name)) is not None:
                raise TriageError(f"user {name!r} exists already; `triage users passwd {name}`")
            s.add(User(name=name, role=role, password_hash=password_hash))

        self.transaction(work)

    def user(self, name: str) -> Account | None:
        with self.session() as s:
            u = s.scalar(select(User).where(User.name == name))
            return None if u is None else _account(u)

    def users(self) -> list[Account]:
        with self.session() as s:
            return [_account(u) for u in s.scalars(select(User).order_by(User.name))]

    def remove_user(self, name: str) -> bool:
        """Remove the account and end its sessions; False when there was none."""

        def work(s: Session) -> bool:
            u = s.scalar(select(User).where(User.name == name))
            if u is None:
                return False
            s.execute(delete(WebSession).where(WebSession.user_id == u.id))
            s.delete(u)
            return True

        return self.transaction(work)

    def set_password(self, name: str, password_hash: str) -> bool:
        """A new password; every session of the account ends (log in again with it)."""

        def work(s: Session) -> bool:
            u = s.scalar(select(User).where(User.name == name))
            if u is None:
                return False
            u.password_hash = password_hash
            u.password_changed_at = utcnow()
            s.execute(delete(WebSession).where(WebSession.user_id == u.id))
            return True

        return self.transaction(work)

    def start_session(self, name: str, hours: float) -> tuple[str, Login]:
        """A new login for ``name``: the token for the browser's cookie, and the login."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)

        def work(s: Session) -> Login:
            u = s.scalar(select(User).where(User.name == name))
            if u is None:
                raise TriageError(f"user {name!r} does not exist")
            now = utcnow()
            s.execute(delete(WebSession).where(WebSession.expires_at < now))  # tidy as we go
            expires = now + timedelta(hours=hours)
            s.add(
                WebSession(
                    token_hash=token_hash(token),
                    user_id=u.id,
                    csrf_token=csrf,
                    created_at=now,
                    expires_at=expires,
                )
            )
            return Login(u.name, u.role, csrf, expires)

        return token, self.transaction(work)

    def session_login(self, token: str, hours: float | None = None) -> Login | None:
        """The login a cookie's token opens, None when unknown or expired. ``hours``: extend
        it that long from now (a session lasts while it is used)."""

        def work(s: Session) -> Login | None:
            row = s.execute(
                select(WebSession, User)
                .join(User, User.id == WebSession.user_id)
                .where(WebSession.token_hash == token_hash(token))
            ).first()
            if row is None:
                return None
            session, user = row
            now = utcnow()
            if session.expires_at < now:
                return None
            if hours is not None:
                renewed = now + timedelta(hours=hours)
                # written at most once a minute: a page polling every few seconds is no load
                if renewed - session.expires_at > timedelta(minutes=1):
                    session.expires_at = renewed
            return Login(user.name, user.role, session.csrf_token, session.expires_at)

        return self.transaction(work)

    def end_session(self, token: str) -> None:
        def work(s: Session) -> None:
            s.execute(delete(WebSession).where(WebSession.token_hash == token_hash(token)))

        self.transaction(work)

    def record_access(
        self,
        who: str,
        action: str,
        study_uid: str | None = None,
        client: str = "",
        detail: str = "",
    ) -> None:
        def work(s: Session) -> None:
            s.add(
                AccessEvent(
                    who=who[:64],
                    action=action,
                    study_instance_uid=study_uid,
                    client=client[:64],
                    detail=detail[:2000],
                )
            )

        self.transaction(work)

    def failed_logins(
        self, since: datetime, *, name: str | None = None, client: str | None = None
    ) -> int:
        """Failed logins since then, for this account name or from this client."""
        query = select(func.count(AccessEvent.id)).where(
            AccessEvent.action == "login failed", AccessEvent.at >= since
        )
        if name is not None:
            query = query.where(AccessEvent.who == name[:64])
        if client is not None:
            query = query.where(AccessEvent.client == client[:64])
        with self.session() as s:
            return int(s.scalar(query) or 0)

    def access_log(
        self, study_uid: str | None = None, who: str | None = None, limit: int = 200
    ) -> list[AccessRecord]:
        """The newest access events first (of one study, or one person, or all)."""
        with self.session() as s:
            query = select(AccessEvent).order_by(AccessEvent.id.desc()).limit(limit)
            if study_uid is not None:
                query = query.where(AccessEvent.study_instance_uid == study_uid)
            if who is not None:
                query = query.where(AccessEvent.who == who)
            return [
                AccessRecord(e.at, e.who, e.action, e.study_instance_uid, e.client, e.detail)
                for e in s.scalars(query)
            ]
