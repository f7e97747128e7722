"""Passwords of the web app's accounts: argon2id (memory-hard), never stored in clear.

The parameters are argon2-cffi's defaults (RFC 9106's second recommended option: 64 MiB,
3 passes), a hash takes about 50-100 ms on one core: slow for a guesser, no wait for a person.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from triage.errors import TriageError

MIN_LENGTH = 10

_hasher = PasswordHasher()

# verified against when the account does not exist, so that a wrong name takes as long to
# refuse as a wrong password (the time does not tell which names exist)
_NO_ACCOUNT = _hasher.hash("no such account: this hash never matches a login")


def check_strength(password: str) -> None:
    """Refuse a password too short to resist guessing (the only rule: length)."""
    if len(password) < MIN_LENGTH:
        raise TriageError(f"the password must be at least {MIN_LENGTH} characters long")


def hash_password(password: str) -> str:
    check_strength(password)
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; ``password_hash`` None: no such account (still slow)."""
    try:
        return _hasher.verify(password_hash or _NO_ACCOUNT, password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False
