"""Settings: environment variables, optionally a TOML config file, and defaults that run embedded.

Every setting has an environment variable ``TRIAGE_<NAME>``; a TOML file named by
``TRIAGE_CONFIG`` may hold the same names in lower case (``quiet_seconds = 10``). The environment
wins over the file. With nothing set, the node runs on one machine: SQLite and a local folder
under ``TRIAGE_HOME``.

This module holds `Settings`, which setting is parsed how and its default, the TOML file and
`load_settings`; the value types (`DicomNode`, `AllowedAE`) and the parsers are in
`triage.config_values`.
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from triage.config_values import (
    AllowedAE,
    DicomNode,
    S3Access,
    parse_addresses,
    parse_ae_title,
    parse_allowed_aes,
    parse_choice,
    parse_device,
    parse_host_port,
    parse_log_level,
    parse_modalities,
    parse_node,
    parse_optional_seconds,
    parse_pem_file,
    parse_port,
    parse_positive_float,
    parse_positive_int,
    parse_secret_file,
    parse_sop_classes,
    parse_uneven_spacing,
    parse_url,
    parse_viewer_url,
    parse_web_port,
    parse_yes_no,
)
from triage.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Settings:
    home: Path
    ae_title: str
    host: str
    port: int
    pacs: DicomNode | None
    quiet_seconds: float
    database_url: str
    store: str
    models: Path
    device: str
    delivery_max_tries: int
    delivery_backoff_seconds: float
    log_level: str
    uneven_spacing: str = "resample"
    amp: str = "off"
    allowed_aes: tuple[AllowedAE, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    pacs_tls: bool = False
    pacs_protocol: str = "dimse"
    pull_interval: float | None = None
    pull_retrieve: str = "c-move"
    pull_modalities: tuple[str, ...] = ("CT", "MR")
    pull_overlap_minutes: float = 10.0
    pull_look_back_hours: float = 24.0
    dicomweb_url: str = ""
    dicomweb_user: str = ""
    dicomweb_password: str = ""
    dicomweb_password_file: Path | None = None
    dicomweb_token: str = ""
    dicomweb_token_file: Path | None = None
    hl7_endpoint: str = ""
    #: a re-run's lower priority waits for a person (`triage ack`); false sends it at once
    hold_downgrades: bool = True
    accept_sop_classes: tuple[str, ...] = ("storage",)
    #: the S3 server of an s3://BUCKET[/PREFIX] store (unused for a folder store)
    s3_endpoint: str = ""
    s3_access_key: str = ""
    s3_access_key_file: Path | None = None
    s3_secret_key: str = ""
    s3_secret_key_file: Path | None = None
    s3_region: str = ""
    s3_ca_bundle: Path | None = None
    #: names this worker in the catalogue's claims and the worklist ("" : host:pid)
    worker_name: str = ""
    #: how long a worker's claim on a study or an outbox row holds without renewal
    lease_seconds: float = 60.0
    #: a study with every instance its senders announced is complete without the quiet period
    complete_on_announced_count: bool = True
    #: the web app's port on TRIAGE_HOST (None: TRIAGE_WEB_PORT=off, no web app)
    web_port: int | None = 8080
    #: the web app's address as users reach it, for links in notifications ("": from host/port)
    web_url: str = ""
    #: how long a login lasts without use
    web_session_hours: float = 12.0
    #: a link to the hospital's viewer, with {study_uid} ("": none)
    viewer_url: str = ""
    #: urgent findings: a JSON POST signed with HMAC-SHA256 of the secret ("": none)
    notify_webhook: str = ""
    notify_webhook_secret: str = ""
    notify_webhook_secret_file: Path | None = None
    #: urgent findings by e-mail: the SMTP server (host:port), STARTTLS unless told otherwise
    notify_smtp: str = ""
    notify_smtp_starttls: bool = True
    notify_smtp_user: str = ""
    notify_smtp_password: str = ""
    notify_smtp_password_file: Path | None = None
    notify_from: str = ""
    notify_to: tuple[str, ...] = ()
    #: put the patient's name in notifications (never by default: they leave the hospital's
    #: systems by e-mail or webhook)
    notify_patient_name: bool = False

    @property
    def web_address(self) -> str:
        """The web app's base URL as users reach it (TRIAGE_WEB_URL, else from host and port)."""
        if self.web_url:
            return self.web_url
        scheme = "https" if self.tls_required else "http"
        return f"{scheme}://{self.host}:{self.web_port or 8080}"

    @property
    def worker(self) -> str:
        """The worker's name: TRIAGE_WORKER_NAME, else host:pid."""
        return self.worker_name or default_worker_name()

    @property
    def store_path(self) -> Path:
        return Path(self.store)

    @property
    def tls_required(self) -> bool:
        """The receiver listens with TLS only (TRIAGE_TLS_CERT and TRIAGE_TLS_KEY are set)."""
        return self.tls_cert is not None and self.tls_key is not None

    def as_dict(self) -> dict[str, str]:
        """The effective configuration, every value as text, for `triage config`; secrets are
        shown as "(set)", never their value."""
        return {
            f.name: "(set)"
            if f.name in SECRET_SETTINGS and getattr(self, f.name)
            else _as_text(getattr(self, f.name))
            for f in fields(self)
        }

    @property
    def s3(self) -> S3Access | None:
        """How to reach the S3 server (keys read from their *_FILE now); None if not set."""
        if not self.s3_endpoint:
            return None
        return S3Access(
            self.s3_endpoint,
            self.secret("s3_access_key"),
            self.secret("s3_secret_key"),
            self.s3_region or None,
            self.s3_ca_bundle,
        )

    def dicomweb_secret(self, name: str) -> str:
        """The DICOMweb password or token: from its variable, else from its *_FILE."""
        return self.secret(name)

    def secret(self, name: str) -> str:
        """A secret setting: from its variable, else from its *_FILE (read when needed, so
        that a rotated file is picked up by the next start)."""
        value: str = getattr(self, name)
        path: Path | None = getattr(self, f"{name}_file")
        if value or path is None:
            return value
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"TRIAGE_{name.upper()}_FILE={str(path)!r}: {exc.strerror}") from exc


SECRET_SETTINGS = {
    "dicomweb_password",
    "dicomweb_token",
    "s3_access_key",
    "s3_secret_key",
    "notify_webhook_secret",
    "notify_smtp_password",
}


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def default_worker_name() -> str:
    """host:pid, what names a worker when TRIAGE_WORKER_NAME is not set."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _default_home() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "triage")


# name -> (parser, default); a default may depend on the home folder
_PARSERS: dict[str, tuple[Callable[[str, str], Any], Callable[[Path], str]]] = {
    "ae_title": (parse_ae_title, lambda home: "TRIAGE"),
    "host": (lambda n, v: v.strip() or "127.0.0.1", lambda home: "127.0.0.1"),
    "port": (parse_port, lambda home: "11112"),
    "pacs": (parse_node, lambda home: ""),
    "quiet_seconds": (parse_positive_float, lambda home: "5"),
    "database_url": (lambda n, v: v, lambda home: f"sqlite:///{home / 'catalogue.db'}"),
    "store": (lambda n, v: v, lambda home: str(home / "store")),
    "models": (lambda n, v: Path(v).expanduser(), lambda home: str(PROJECT_ROOT / "models")),
    "device": (parse_device, lambda home: "auto"),
    "delivery_max_tries": (parse_positive_int, lambda home: "8"),
    "delivery_backoff_seconds": (parse_positive_float, lambda home: "2"),
    "log_level": (parse_log_level, lambda home: "INFO"),
    "uneven_spacing": (parse_uneven_spacing, lambda home: "resample"),
    "amp": (parse_choice("off", "float16", "bfloat16"), lambda home: "off"),
    "allowed_aes": (parse_allowed_aes, lambda home: ""),
    "tls_cert": (parse_pem_file, lambda home: ""),
    "tls_key": (parse_pem_file, lambda home: ""),
    "tls_ca": (parse_pem_file, lambda home: ""),
    "pacs_tls": (parse_yes_no, lambda home: "false"),
    "pacs_protocol": (parse_choice("dimse", "dicomweb"), lambda home: "dimse"),
    "pull_interval": (parse_optional_seconds, lambda home: ""),
    "pull_retrieve": (parse_choice("c-move", "c-get"), lambda home: "c-move"),
    "pull_modalities": (parse_modalities, lambda home: "CT,MR"),
    "pull_overlap_minutes": (parse_positive_float, lambda home: "10"),
    "pull_look_back_hours": (parse_positive_float, lambda home: "24"),
    "dicomweb_url": (parse_url, lambda home: ""),
    "dicomweb_user": (lambda n, v: v.strip(), lambda home: ""),
    "dicomweb_password": (lambda n, v: v, lambda home: ""),
    "dicomweb_password_file": (parse_secret_file, lambda home: ""),
    "dicomweb_token": (lambda n, v: v.strip(), lambda home: ""),
    "dicomweb_token_file": (parse_secret_file, lambda home: ""),
    "hl7_endpoint": (parse_host_port, lambda home: ""),
    "hold_downgrades": (parse_yes_no, lambda home: "true"),
    "accept_sop_classes": (parse_sop_classes, lambda home: "storage"),
    "s3_endpoint": (parse_url, lambda home: ""),
    "s3_access_key": (lambda n, v: v.strip(), lambda home: ""),
    "s3_access_key_file": (parse_secret_file, lambda home: ""),
    "s3_secret_key": (lambda n, v: v.strip(), lambda home: ""),
    "s3_secret_key_file": (parse_secret_file, lambda home: ""),
    "s3_region": (lambda n, v: v.strip(), lambda home: ""),
    "s3_ca_bundle": (parse_pem_file, lambda home: ""),
    "worker_name": (lambda n, v: v.strip(), lambda home: ""),
    "lease_seconds": (parse_positive_float, lambda home: "60"),
    "complete_on_announced_count": (parse_yes_no, lambda home: "true"),
    "web_port": (parse_web_port, lambda home: "8080"),
    "web_url": (parse_url, lambda home: ""),
    "web_session_hours": (parse_positive_float, lambda home: "12"),
    "viewer_url": (parse_viewer_url, lambda home: ""),
    "notify_webhook": (parse_url, lambda home: ""),
    "notify_webhook_secret": (lambda n, v: v.strip(), lambda home: ""),
    "notify_webhook_secret_file": (parse_secret_file, lambda home: ""),
    "notify_smtp": (parse_host_port, lambda home: ""),
    "notify_smtp_starttls": (parse_yes_no, lambda home: "true"),
    "notify_smtp_user": (lambda n, v: v.strip(), lambda home: ""),
    "notify_smtp_password": (lambda n, v: v, lambda home: ""),
    "notify_smtp_password_file": (parse_secret_file, lambda home: ""),
    "notify_from": (parse_addresses, lambda home: ""),
    "notify_to": (parse_addresses, lambda home: ""),
    "notify_patient_name": (parse_yes_no, lambda home: "false"),
}


def _read_file(path: str) -> dict[str, str]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"TRIAGE_CONFIG={path!r}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"TRIAGE_CONFIG={path!r} is not valid TOML: {exc}") from None
    known = set(_PARSERS) | {"home"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"TRIAGE_CONFIG={path!r} has unknown setting(s) {', '.join(unknown)}; "
            f"known settings are {', '.join(sorted(known))}"
        )
    return {
        key: ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
        for key, value in data.items()
    }


def _check_tls_pair(values: Mapping[str, Any], names: Mapping[str, str]) -> None:
    """The node's certificate and its private key come together or not at all."""
    if (values["tls_cert"] is None) == (values["tls_key"] is None):
        return
    given, missing = (
        ("tls_key", "tls_cert") if values["tls_cert"] is None else ("tls_cert", "tls_key")
    )
    raise ConfigError(
        f"{names[given]} is set but {names[missing]} is not: set both (the receiver then "
        "accepts TLS only) or neither"
    )


def _check_s3(values: Mapping[str, Any], names: Mapping[str, str]) -> None:
    """An s3:// store needs the server's URL and both keys (as a value or as a *_FILE)."""
    if not values["store"].startswith("s3://"):
        return
    if not values["s3_endpoint"]:
        raise ConfigError(
            f"{names['store']}={values['store']!r} needs {names['s3_endpoint']}: the URL of "
            "the S3 server, e.g. https://s3.example:9000"
        )
    for key in ("s3_access_key", "s3_secret_key"):
        if not values[key] and values[f"{key}_file"] is None:
            raise ConfigError(
                f"{names['store']}={values['store']!r} needs {names[key]} "
                f"(or {names[key + '_file']}, a file that holds it)"
            )


def _check_notify(values: dict[str, Any], names: Mapping[str, str]) -> None:
    """A webhook needs its secret (the receiver checks the signature); e-mail needs a sender
    and at least one recipient."""
    if values["notify_webhook"] and not (
        values["notify_webhook_secret"] or values["notify_webhook_secret_file"]
    ):
        raise ConfigError(
            f"{names['notify_webhook']} is set but not {names['notify_webhook_secret']} (or "
            f"{names['notify_webhook_secret_file']}): the messages are signed with it"
        )
    if values["notify_smtp"] and (len(values["notify_from"]) != 1 or not values["notify_to"]):
        raise ConfigError(
            f"{names['notify_smtp']} is set: it needs {names['notify_from']} (one address) "
            f"and {names['notify_to']} (the recipients, separated by commas)"
        )
    values["notify_from"] = values["notify_from"][0] if values["notify_from"] else ""


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build the effective settings; a wrong value raises ConfigError naming the variable."""
    env = os.environ if environ is None else environ
    from_file = _read_file(env["TRIAGE_CONFIG"]) if env.get("TRIAGE_CONFIG") else {}

    def raw(key: str) -> tuple[str, str | None]:
        var = f"TRIAGE_{key.upper()}"
        if var in env:
            return var, env[var]
        if key in from_file:
            return f"{key} (in {env['TRIAGE_CONFIG']})", from_file[key]
        return var, None

    _, home_value = raw("home")
    home = Path(home_value or _default_home()).expanduser().resolve()
    values: dict[str, Any] = {"home": home}
    names: dict[str, str] = {}
    for key, (parser, default) in _PARSERS.items():
        names[key], value = raw(key)
        values[key] = parser(names[key], default(home) if value is None else value)
    _check_tls_pair(values, names)
    if values["pacs_protocol"] == "dicomweb" and not values["dicomweb_url"]:
        raise ConfigError(
            f"{names['pacs_protocol']}=dicomweb needs {names['dicomweb_url']}: the DICOMweb "
            "root of the PACS, e.g. https://pacs.example/dicom-web"
        )
    _check_s3(values, names)
    _check_notify(values, names)
    return Settings(**values)
