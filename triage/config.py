"""Settings: environment variables, optionally a TOML config file, and defaults that run embedded.

Every setting has an environment variable ``TRIAGE_<NAME>``; a TOML file named by
``TRIAGE_CONFIG`` may hold the same names in lower case (``quiet_seconds = 10``). The environment
wins over the file. With nothing set, the node runs on one machine: SQLite and a local folder
under ``TRIAGE_HOME``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from triage.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class DicomNode:
    """A remote DICOM application entity: where results are sent."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class AllowedAE:
    """One entry of TRIAGE_ALLOWED_AES: a calling AE title, optionally only from one host."""

    ae_title: str
    host: str | None = None

    def __str__(self) -> str:
        return self.ae_title if self.host is None else f"{self.ae_title}@{self.host}"


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

    def dicomweb_secret(self, name: str) -> str:
        """The DICOMweb password or token: from its variable, else from its *_FILE."""
        value: str = getattr(self, name)
        path: Path | None = getattr(self, f"{name}_file")
        if value or path is None:
            return value
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"TRIAGE_{name.upper()}_FILE={str(path)!r}: {exc.strerror}") from exc


SECRET_SETTINGS = {"dicomweb_password", "dicomweb_token"}


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable ASCII without backslash


def parse_ae_title(name: str, value: str) -> str:
    title = value.strip()
    if not title or not _AE_RE.match(value.rstrip()) or len(title) > 16:
        raise ConfigError(
            f"{name}={value!r} is not a valid AE title: use 1-16 printable ASCII characters "
            "without a backslash, e.g. TRIAGE"
        )
    return title


def parse_port(name: str, value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise ConfigError(f"{name}={value!r} is not a TCP port: use a number from 1 to 65535")
    return port


def parse_node(name: str, value: str) -> DicomNode | None:
    if not value.strip():
        return None
    match = re.fullmatch(r"\s*([^@]+)@([^:@\s]+):(\d+)\s*", value)
    if not match:
        raise ConfigError(
            f"{name}={value!r} is not a DICOM node: write it as AE@host:port, "
            "e.g. ORTHANC@127.0.0.1:4242"
        )
    ae, host, port = match.groups()
    return DicomNode(parse_ae_title(name, ae), host, parse_port(name, port))


_HOST_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOSTNAME_RE = re.compile(rf"^{_HOST_LABEL}(\.{_HOST_LABEL})*\.?$")


def _is_host(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return len(text) <= 253 and bool(_HOSTNAME_RE.match(text))


def parse_allowed_aes(name: str, value: str) -> tuple[AllowedAE, ...]:
    """Comma separated ``AE`` or ``AE@host`` entries; blank means any calling AE is accepted."""
    entries = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        if "@" not in item:
            entries.append(AllowedAE(parse_ae_title(name, item)))
            continue
        title, _, host = item.rpartition("@")
        if not _is_host(host.strip()):
            raise ConfigError(
                f"{name}={value!r}: {host!r} in {item!r} is not a host name or IP address; "
                "write each entry as AE or AE@host, e.g. CT_SCANNER,MR_SCANNER@10.0.0.7"
            )
        entries.append(AllowedAE(parse_ae_title(name, title), host.strip()))
    return tuple(entries)


def _pem_file(name: str, value: str) -> Path | None:
    """A readable PEM file (certificate, private key or CA bundle); blank means not set."""
    if not value.strip():
        return None
    path = Path(value.strip()).expanduser().resolve()
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{name}={value!r}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{name}={value!r} is a folder: give the PEM file itself") from None
    except PermissionError:
        raise ConfigError(
            f"{name}={value!r} cannot be read (permission denied): make it readable by the "
            "user that runs the node"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{name}={value!r} cannot be read: {exc.strerror}") from None
    if b"-----BEGIN " not in content:
        raise ConfigError(
            f"{name}={value!r} is not a PEM file (no '-----BEGIN' line): give the "
            "certificate, private key or CA bundle in PEM format"
        )
    return path


def _yes_no(name: str, value: str) -> bool:
    text = value.strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0", ""):
        return False
    raise ConfigError(f"{name}={value!r} is not a yes/no value: use true or false")


def _positive_float(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number > 0:
        raise ConfigError(f"{name}={value!r} must be a positive number of seconds")
    return number


def _positive_int(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 1:
        raise ConfigError(f"{name}={value!r} must be a whole number of at least 1")
    return number


def _device(name: str, value: str) -> str:
    if value not in ("auto", "cpu") and not re.fullmatch(r"cuda(:\d+)?", value):
        raise ConfigError(f"{name}={value!r} is not a device: use auto, cpu, cuda or cuda:N")
    return value


def _log_level(name: str, value: str) -> str:
    level = value.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"{name}={value!r} is not a log level: use DEBUG, INFO, WARNING or ERROR")
    return level


def _choice(*choices: str) -> Callable[[str, str], str]:
    def parse(name: str, value: str) -> str:
        choice = value.strip().lower()
        if choice not in choices:
            raise ConfigError(f"{name}={value!r}: use one of {', '.join(choices)}")
        return choice

    return parse


def _optional_seconds(name: str, value: str) -> float | None:
    return _positive_float(name, value) if value.strip() else None


def _modalities(name: str, value: str) -> tuple[str, ...]:
    items = tuple(v.strip().upper() for v in value.split(",") if v.strip())
    if not items or not all(re.fullmatch(r"[A-Z0-9]{1,16}", v) for v in items):
        raise ConfigError(f"{name}={value!r}: give modalities as a comma list, e.g. CT,MR")
    return items


def _url(name: str, value: str) -> str:
    url = value.strip().rstrip("/")
    if url and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
        raise ConfigError(
            f"{name}={value!r} is not an http(s) URL: give the DICOMweb root, e.g. "
            "https://pacs.example/dicom-web"
        )
    return url


def _host_port(name: str, value: str) -> str:
    text = value.strip()
    if text and not re.fullmatch(r"[^:\s]+:\d{1,5}", text):
        raise ConfigError(f"{name}={value!r}: write the MLLP endpoint as host:port")
    return text


def _secret_file(name: str, value: str) -> Path | None:
    if not value.strip():
        return None
    path = Path(value.strip()).expanduser()
    if not path.is_file():
        raise ConfigError(f"{name}={value!r}: no such file")
    return path


_UID_RE = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+")


def _sop_classes(name: str, value: str) -> tuple[str, ...]:
    """``storage``, ``images``, storage SOP class keywords and UIDs, comma separated; keywords
    become UIDs (the receiver expands the two groups)."""
    import difflib

    from pydicom.uid import UID
    from pynetdicom import sop_class
    from pynetdicom.presentation import AllStoragePresentationContexts

    storage = {str(cx.abstract_syntax) for cx in AllStoragePresentationContexts}
    named = vars(sop_class).items()
    keywords = {k: str(v) for k, v in named if isinstance(v, str) and v in storage}
    keywords |= {UID(u).keyword: u for u in storage if UID(u).keyword}
    by_lower = {k.lower(): u for k, u in keywords.items()}
    items = [part.strip() for part in value.split(",") if part.strip()]
    if not items:
        raise ConfigError(
            f"{name}={value!r}: give storage (every storage SOP class), images (the image "
            "classes), or SOP class keywords or UIDs, comma separated"
        )
    out: list[str] = []
    for item in items:
        uid = UID(item if len(item) <= 64 and _UID_RE.fullmatch(item) else "0")
        if item.lower() in ("storage", "images"):
            out.append(item.lower())
        elif item.lower() in by_lower:
            out.append(by_lower[item.lower()])
        elif uid != item:
            close = difflib.get_close_matches(item, [*keywords, "storage", "images"], 1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(
                f"{name}={value!r}: {item!r} is neither storage, images, a storage SOP class "
                f"keyword (e.g. SecondaryCaptureImageStorage) nor a UID{hint}"
            )
        elif uid not in storage and uid.name != uid and not uid.name.endswith("Storage"):
            raise ConfigError(
                f"{name}={value!r}: {item} is the UID of {uid.name}, not a storage SOP class"
            )
        else:
            out.append(str(uid))  # a standard, retired or private storage class
    return tuple(dict.fromkeys(out))


def _uneven_spacing(name: str, value: str) -> str:
    choice = value.strip().lower()
    if choice not in ("resample", "refuse"):
        raise ConfigError(
            f"{name}={value!r}: use resample (uneven slice steps and missing slices are "
            "interpolated onto a regular grid) or refuse (such series are not analysed)"
        )
    return choice


def _default_home() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "triage")


# name -> (parser, default); a default may depend on the home folder
_PARSERS: dict[str, tuple[Callable[[str, str], Any], Callable[[Path], str]]] = {
    "ae_title": (parse_ae_title, lambda home: "TRIAGE"),
    "host": (lambda n, v: v.strip() or "127.0.0.1", lambda home: "127.0.0.1"),
    "port": (parse_port, lambda home: "11112"),
    "pacs": (parse_node, lambda home: ""),
    "quiet_seconds": (_positive_float, lambda home: "5"),
    "database_url": (lambda n, v: v, lambda home: f"sqlite:///{home / 'catalogue.db'}"),
    "store": (lambda n, v: v, lambda home: str(home / "store")),
    "models": (lambda n, v: Path(v).expanduser(), lambda home: str(PROJECT_ROOT / "models")),
    "device": (_device, lambda home: "auto"),
    "delivery_max_tries": (_positive_int, lambda home: "8"),
    "delivery_backoff_seconds": (_positive_float, lambda home: "2"),
    "log_level": (_log_level, lambda home: "INFO"),
    "uneven_spacing": (_uneven_spacing, lambda home: "resample"),
    "allowed_aes": (parse_allowed_aes, lambda home: ""),
    "tls_cert": (_pem_file, lambda home: ""),
    "tls_key": (_pem_file, lambda home: ""),
    "tls_ca": (_pem_file, lambda home: ""),
    "pacs_tls": (_yes_no, lambda home: "false"),
    "pacs_protocol": (_choice("dimse", "dicomweb"), lambda home: "dimse"),
    "pull_interval": (_optional_seconds, lambda home: ""),
    "pull_retrieve": (_choice("c-move", "c-get"), lambda home: "c-move"),
    "pull_modalities": (_modalities, lambda home: "CT,MR"),
    "pull_overlap_minutes": (_positive_float, lambda home: "10"),
    "pull_look_back_hours": (_positive_float, lambda home: "24"),
    "dicomweb_url": (_url, lambda home: ""),
    "dicomweb_user": (lambda n, v: v.strip(), lambda home: ""),
    "dicomweb_password": (lambda n, v: v, lambda home: ""),
    "dicomweb_password_file": (_secret_file, lambda home: ""),
    "dicomweb_token": (lambda n, v: v.strip(), lambda home: ""),
    "dicomweb_token_file": (_secret_file, lambda home: ""),
    "hl7_endpoint": (_host_port, lambda home: ""),
    "hold_downgrades": (_yes_no, lambda home: "true"),
    "accept_sop_classes": (_sop_classes, lambda home: "storage"),
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
    return Settings(**values)
