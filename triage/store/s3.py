"""An S3 (or MinIO, SeaweedFS, Ceph...) bucket as the object store, through the minio client.

The same keys and the same small interface as the local folder: ``TRIAGE_STORE=s3://BUCKET``
or ``s3://BUCKET/PREFIX`` keeps ``raw/<study>/<series>/<sop>.dcm`` at ``PREFIX/raw/...``. A
`put` returns only once the server has acknowledged the whole object and the ETag it returned
matches the MD5 of the bytes sent (for a multipart upload: the MD5 of the parts' MD5s, then
``-<parts>``), because the receiver answers the modality "stored" on the strength of it.

Passing failures (a connection reset, a timeout, a 5xx, SlowDown) are retried a few times with
a growing pause; what remains becomes StorageError (the receiver answers 0xA700, so the modality
sends again later) with a message that says what failed and never holds a key.
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import TypeVar
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from triage.config_values import S3Access
from triage.errors import ConfigError, StorageError
from triage.store.keys import check_key

log = logging.getLogger(__name__)

T = TypeVar("T")

#: minio's smallest part is 5 MiB; 16 MiB keeps a big series object to a few parts
DEFAULT_PART_SIZE = 16 * 1024 * 1024
#: tries of one operation: the first and up to three more after 0.5, 1 and 2 s
TRIES = 4
FIRST_PAUSE_SECONDS = 0.5
#: keys listed per request (S3 answers at most 1000)
LIST_PAGE = 1000

_PASSING_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"}
_MISSING_CODES = {"NoSuchKey", "NotFound", "ResourceNotFound"}
_KEY_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"}
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


def parse_s3_location(location: str) -> tuple[str, str]:
    """``s3://BUCKET[/PREFIX]`` -> (bucket, prefix without slashes); ConfigError naming
    TRIAGE_STORE when it cannot be a bucket name."""
    rest = location.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise ConfigError(
            f"TRIAGE_STORE={location!r}: {bucket!r} is not an S3 bucket name (3-63 lower-case "
            "letters, digits, dots and hyphens); write s3://BUCKET or s3://BUCKET/PREFIX"
        )
    if prefix:
        try:
            check_key(prefix)
        except StorageError:
            raise ConfigError(
                f"TRIAGE_STORE={location!r}: the prefix {prefix!r} may only hold "
                "[A-Za-z0-9._-] and single slashes"
            ) from None
    return bucket, prefix


class S3Store:
    """A bucket (and optional prefix inside it) on an S3 server."""

    def __init__(
        self,
        bucket: str,
        access: S3Access,
        prefix: str = "",
        *,
        part_size: int = DEFAULT_PART_SIZE,
        timeout_seconds: float = 30.0,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_size = part_size
        self.endpoint = access.endpoint
        url = urlsplit(access.endpoint)
        if url.scheme not in ("http", "https") or not url.netloc or url.path.strip("/"):
            raise ConfigError(
                f"TRIAGE_S3_ENDPOINT={access.endpoint!r}: give the server's URL without a "
                "path, e.g. https://s3.example:9000 (the bucket goes in TRIAGE_STORE)"
            )
        # our own pool: bounded timeouts, and no retries inside urllib3 (they are counted here)
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(5.0, timeout_seconds), read=timeout_seconds),
            maxsize=10,
            cert_reqs="CERT_REQUIRED",
            ca_certs=str(access.ca_bundle) if access.ca_bundle else certifi.where(),
            retries=False,
        )
        self._client = Minio(
            url.netloc,
            access_key=access.access_key,
            secret_key=access.secret_key,
            secure=url.scheme == "https",
            region=access.region,
            http_client=http,
        )

    def __repr__(self) -> str:
        return f"S3Store({self.location!r}, endpoint={self.endpoint!r})"

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def check_access(self) -> None:
        """At start-up: the server answers, the keys are accepted and the bucket exists; each
        failure is a ConfigError naming the variable to fix."""
        try:
            found = self._retry("reach the bucket", lambda: self._client.bucket_exists(self.bucket))
        except S3Error as exc:
            if exc.code in _KEY_CODES:
                variable = (
                    "TRIAGE_S3_ACCESS_KEY"
                    if exc.code == "InvalidAccessKeyId"
                    else "TRIAGE_S3_SECRET_KEY"
                )
                raise ConfigError(
                    f"the S3 server {self.endpoint} refused the keys ({exc.code}: {exc.message}):"
                    f" check {variable} (or its _FILE), and that the key may use "
                    f"bucket {self.bucket!r}"
                ) from None
            raise ConfigError(
                f"the S3 server {self.endpoint} answered {exc.code} for bucket "
                f"{self.bucket!r}: check TRIAGE_STORE and TRIAGE_S3_REGION"
            ) from None
        except StorageError as exc:
            raise ConfigError(
                f"cannot reach the S3 server at TRIAGE_S3_ENDPOINT={self.endpoint!r} ({exc}): "
                "check the URL, that the server runs, and TRIAGE_S3_CA_BUNDLE for https"
            ) from None
        if not found:
            raise ConfigError(
                f"TRIAGE_STORE={self.location!r}: the bucket {self.bucket!r} does not exist on "
                f"{self.endpoint}; create it or name an existing bucket"
            )

    def _retry(self, action: str, call: Callable[[], T]) -> T:
        """Run one S3 call, again after a pause when it failed in passing; transport failures
        that remain become StorageError, S3 answers (S3Error) are raised for the caller."""
        pause = FIRST_PAUSE_SECONDS
        for attempt in range(1, TRIES + 1):
            try:
                return call()
            except S3Error as exc:
                if exc.code not in _PASSING_CODES or attempt == TRIES:
                    raise
                reason = f"{exc.code}: {exc.message}"
            except ServerError as exc:
                reason = f"HTTP {exc.status_code} from the server"
                if attempt == TRIES:
                    raise StorageError(f"cannot {action} on {self.endpoint}: {reason}") from None
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                reason = _transport_reason(exc)
                if attempt == TRIES:
                    raise StorageError(
                        f"cannot {action} on {self.endpoint} after {TRIES} tries: {reason}"
                    ) from None
            except InvalidResponseError as exc:  # an answer that is not S3's XML
                status = int(getattr(exc, "_code", 0) or 0)  # minio keeps the status only here
                reason = f"HTTP {status} without an S3 error document"
                if status < 500:
                    raise StorageError(
                        f"cannot {action}: {self.endpoint} gave {reason}; is "
                        "TRIAGE_S3_ENDPOINT the S3 port of the server?"
                    ) from None
                if attempt == TRIES:  # a proxy in front of the server, busy or restarting
                    raise StorageError(
                        f"cannot {action} on {self.endpoint} after {TRIES} tries: {reason}"
                    ) from None
            log.warning("S3: cannot %s (try %d of %d): %s", action, attempt, TRIES, reason)
            time.sleep(pause)
            pause *= 2
        raise AssertionError("unreachable")

    def _expected_etag(self, data: bytes) -> str:
        """The ETag an S3 server gives these bytes uploaded with our part size."""
        if len(data) <= self.part_size:
            return hashlib.md5(data, usedforsecurity=False).hexdigest()
        parts = [data[i : i + self.part_size] for i in range(0, len(data), self.part_size)]
        digests = b"".join(hashlib.md5(p, usedforsecurity=False).digest() for p in parts)
        return f"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(parts)}"

    def put(self, key: str, data: bytes) -> None:
        """Write the object; returns once the server acknowledged it with the expected ETag."""
        name = self._name(key)
        expected = self._expected_etag(data)

        def upload() -> str | None:
            result = self._client.put_object(
                self.bucket,
                name,
                io.BytesIO(data),
                len(data),
                part_size=self.part_size,
            )
            return result.etag

        try:
            etag = self._retry(f"write {key}", upload)
        except S3Error as exc:
            raise StorageError(self._refused(f"write {key}", exc)) from None
        if (etag or "").strip('"') != expected:
            raise StorageError(
                f"the S3 server stored {key} in {self.location} with ETag {etag!r}, not the "
                f"{expected!r} of the bytes sent: the object may be damaged; send it again"
            )

    def get(self, key: str) -> bytes:
        name = self._name(key)

        def download() -> bytes:
            response = self._client.get_object(self.bucket, name)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        try:
            return self._retry(f"read {key}", download)
        except S3Error as exc:
            if exc.code in _MISSING_CODES:
                raise StorageError(f"{key} is not in the object store {self.location}") from None
            raise StorageError(self._refused(f"read {key}", exc)) from None

    def exists(self, key: str) -> bool:
        name = self._name(key)
        try:
            self._retry(f"look for {key}", lambda: self._client.stat_object(self.bucket, name))
        except S3Error as exc:
            if exc.code in _MISSING_CODES:
                return False
            raise StorageError(self._refused(f"look for {key}", exc)) from None
        return True

    def delete(self, key: str) -> None:
        """Remove the object; removing one that is not there is quiet, as on S3 itself."""
        name = self._name(key)
        try:
            self._retry(f"delete {key}", lambda: self._client.remove_object(self.bucket, name))
        except S3Error as exc:
            if exc.code not in _MISSING_CODES:
                raise StorageError(self._refused(f"delete {key}", exc)) from None

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Every key under ``prefix`` taken as a folder (``raw`` lists ``raw/...``), a page at
        a time: a bucket of millions of instances is never held in memory, and a failed page
        is asked for again from where the last one ended."""
        folder = prefix.strip("/")
        within = "/".join(p for p in (self.prefix, folder) if p)
        start = f"{within}/" if within else ""
        strip = len(f"{self.prefix}/") if self.prefix else 0
        action = f"list {prefix or 'the keys'}"

        def page(after: str | None) -> list[str]:
            listed = self._client.list_objects(
                self.bucket, prefix=start, recursive=True, start_after=after
            )
            files = (str(o.object_name) for o in listed if not o.is_dir)
            return list(itertools.islice(files, LIST_PAGE))

        after: str | None = None
        while True:
            try:
                names = self._retry(action, functools.partial(page, after))
            except S3Error as exc:
                raise StorageError(self._refused(action, exc)) from None
            for name in names:
                yield name[strip:]
            if len(names) < LIST_PAGE:
                return
            after = names[-1]

    def _refused(self, action: str, exc: S3Error) -> str:
        return (
            f"the S3 server {self.endpoint} refused to {action} in {self.location}: "
            f"{exc.code}: {exc.message}"
        )


def _transport_reason(exc: BaseException) -> str:
    """A short reason for a failed connection, without the request's headers (they sign with
    the secret key)."""
    reason = getattr(exc, "reason", None) or exc
    return f"{type(reason).__name__}: {reason}"[:300]


def open_s3_store(location: str, access: S3Access | None) -> S3Store:
    """The S3Store named by TRIAGE_STORE=s3://..., checked: the server answers, the keys work,
    the bucket exists."""
    if access is None:
        raise ConfigError(
            f"TRIAGE_STORE={location!r} needs TRIAGE_S3_ENDPOINT, the URL of the S3 server"
        )
    bucket, prefix = parse_s3_location(location)
    store = S3Store(bucket, access, prefix)
    store.check_access()
    return store
