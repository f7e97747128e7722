"""Settings: environment variables, optionally a TOML config file, and defaults that run embedded.

Every setting has an environment variable ``TRIAGE_<NAME>``; a TOML file named by
``TRIAGE_CONFIG`` may hold the same names in lower case (``quiet_seconds = 10``). The environment
wins over the file. With nothing set, the node runs on one machine: SQLite and a local folder
under ``TRIAGE_HOME``.
"""

from __future__ import annotations

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

    @property
    def store_path(self) -> Path:
        return Path(self.store)

    def as_dict(self) -> dict[str, str]:
        """The effective configuration, every value as text, for `triage config`."""
        return {
            f.name: "" if getattr(self, f.name) is None else str(getattr(self, f.name))
            for f in fields(self)
        }


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
    return {key: str(value) for key, value in data.items()}


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
    for key, (parser, default) in _PARSERS.items():
        name, value = raw(key)
        values[key] = parser(name, default(home) if value is None else value)
    return Settings(**values)
