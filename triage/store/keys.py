"""Object keys, the same for every backend: ``raw/<study>/<series>/<sop>.dcm`` and the like.

Only ``[A-Za-z0-9._-]`` and single slashes, never ``.`` or ``..`` as a part: a key can then be
neither a path out of the local folder nor a name an S3 server reads differently.
"""

from __future__ import annotations

import re

from triage.errors import StorageError

_KEY_RE = re.compile(r"^[A-Za-z0-9._\-]+(/[A-Za-z0-9._\-]+)*$")


def check_key(key: str) -> str:
    if not _KEY_RE.match(key) or any(part in (".", "..") for part in key.split("/")):
        raise StorageError(f"object key {key!r} is not valid: use a/b/c.dcm with [A-Za-z0-9._-]")
    return key


def instance_key(study_uid: str, series_uid: str, sop_uid: str) -> str:
    """Key of a received instance; the same instance always lands on the same key."""
    return check_key(f"raw/{study_uid}/{series_uid}/{sop_uid}.dcm")


def sop_uid_of(key: str) -> str:
    """The SOPInstanceUID an instance key (`instance_key`) was made from."""
    return key.rsplit("/", 1)[-1].removesuffix(".dcm")
