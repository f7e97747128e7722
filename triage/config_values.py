"""The values of the settings: their types and the parser of each, with messages that name it.

Each parser takes the setting's name as the user wrote it (``TRIAGE_PORT``, or ``port (in
FILE)`` from the TOML file) and its text, and returns the value or raises ConfigError naming
both and saying what to write instead. `triage.config` says which setting uses which parser.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from triage.errors import ConfigError


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
class S3Access:
    """How to reach the S3 server of an ``s3://`` store: its URL, keys and trust anchors.
    The keys stay out of the repr so that a logged or printed value never shows them."""

    endpoint: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    region: str | None = None
    ca_bundle: Path | None = None


_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable ASCII without backslash


def parse_ae_title(name: str, value: str) -> str:
    """An AE title as DICOM allows it (1-16 printable ASCII, no backslash), trimmed."""
    title = value.strip()
    if not title or not _AE_RE.match(value.rstrip()) or len(title) > 16:
        raise ConfigError(
            f"{name}={value!r} is not a valid AE title: use 1-16 printable ASCII characters "
            "without a backslash, e.g. TRIAGE"
        )
    return title


def parse_port(name: str, value: str) -> int:
    """A TCP port, 1-65535."""
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise ConfigError(f"{name}={value!r} is not a TCP port: use a number from 1 to 65535")
    return port


def parse_node(name: str, value: str) -> DicomNode | None:
    """A DICOM node written AE@host:port; blank means none."""
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


def parse_pem_file(name: str, value: str) -> Path | None:
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


def parse_yes_no(name: str, value: str) -> bool:
    """true/yes/on/1 or false/no/off/0 (blank is false)."""
    text = value.strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0", ""):
        return False
    raise ConfigError(f"{name}={value!r} is not a yes/no value: use true or false")


def parse_positive_float(name: str, value: str) -> float:
    """A number above zero (seconds, minutes or hours, as the setting says)."""
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number > 0:
        raise ConfigError(f"{name}={value!r} must be a positive number of seconds")
    return number


def parse_positive_int(name: str, value: str) -> int:
    """A whole number of at least 1."""
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 1:
        raise ConfigError(f"{name}={value!r} must be a whole number of at least 1")
    return number


def parse_device(name: str, value: str) -> str:
    """Where models run: auto (cuda when present), cpu, cuda or cuda:N."""
    if value not in ("auto", "cpu") and not re.fullmatch(r"cuda(:\d+)?", value):
        raise ConfigError(f"{name}={value!r} is not a device: use auto, cpu, cuda or cuda:N")
    return value


def parse_log_level(name: str, value: str) -> str:
    """DEBUG, INFO, WARNING or ERROR, in any case."""
    level = value.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"{name}={value!r} is not a log level: use DEBUG, INFO, WARNING or ERROR")
    return level


def parse_choice(*choices: str) -> Callable[[str, str], str]:
    """A parser that accepts one of ``choices`` (in any case)."""

    def parse(name: str, value: str) -> str:
        choice = value.strip().lower()
        if choice not in choices:
            raise ConfigError(f"{name}={value!r}: use one of {', '.join(choices)}")
        return choice

    return parse


def parse_optional_seconds(name: str, value: str) -> float | None:
    """A positive number of seconds, or blank for none (off)."""
    return parse_positive_float(name, value) if value.strip() else None


def parse_modalities(name: str, value: str) -> tuple[str, ...]:
    """DICOM modalities as a comma list (CT,MR), upper-cased."""
    items = tuple(v.strip().upper() for v in value.split(",") if v.strip())
    if not items or not all(re.fullmatch(r"[A-Z0-9]{1,16}", v) for v in items):
        raise ConfigError(f"{name}={value!r}: give modalities as a comma list, e.g. CT,MR")
    return items


def parse_url(name: str, value: str) -> str:
    """An http(s) URL without its trailing slash; blank means not set."""
    url = value.strip().rstrip("/")
    if url and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
        raise ConfigError(
            f"{name}={value!r} is not an http(s) URL: give the DICOMweb root, e.g. "
            "https://pacs.example/dicom-web"
        )
    return url


def parse_host_port(name: str, value: str) -> str:
    """An endpoint (MLLP, SMTP) written host:port; blank means not set."""
    text = value.strip()
    if text and not re.fullmatch(r"[^:\s]+:\d{1,5}", text):
        raise ConfigError(f"{name}={value!r}: write it as host:port")
    return text


def parse_web_port(name: str, value: str) -> int | None:
    """The web app's TCP port; ``off`` (or blank) means no web app."""
    if value.strip().lower() in ("", "off", "no", "false"):
        return None
    return parse_port(name, value.strip())


def parse_viewer_url(name: str, value: str) -> str:
    """A link template to the hospital's viewer, with ``{study_uid}`` in it; blank: no link."""
    text = value.strip()
    if not text:
        return ""
    if not re.fullmatch(r"https?://\S+", text) or "{study_uid}" not in text:
        raise ConfigError(
            f"{name}={value!r}: give an http(s) URL with {{study_uid}} where the study goes, "
            "e.g. https://pacs.example/ui/app/#/study?StudyInstanceUID={study_uid}"
        )
    try:
        text.format(study_uid="1.2.3")
    except (KeyError, IndexError, ValueError):
        raise ConfigError(
            f"{name}={value!r}: only {{study_uid}} may stand in braces in the viewer link"
        ) from None
    return text


def parse_addresses(name: str, value: str) -> tuple[str, ...]:
    """E-mail addresses, separated by commas; blank means none."""
    out = tuple(a.strip() for a in value.split(",") if a.strip())
    for address in out:
        if not re.fullmatch(r"[^@\s,]+@[^@\s,]+", address):
            raise ConfigError(f"{name}={value!r}: {address!r} is not an e-mail address")
    return out


def parse_secret_file(name: str, value: str) -> Path | None:
    """A file that holds a secret (read when it is needed); blank means not set."""
    if not value.strip():
        return None
    path = Path(value.strip()).expanduser()
    if not path.is_file():
        raise ConfigError(f"{name}={value!r}: no such file")
    return path


_UID_RE = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+")


def parse_sop_classes(name: str, value: str) -> tuple[str, ...]:
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


def parse_uneven_spacing(name: str, value: str) -> str:
    """What to do with uneven slice steps: resample or refuse."""
    choice = value.strip().lower()
    if choice not in ("resample", "refuse"):
        raise ConfigError(
            f"{name}={value!r}: use resample (uneven slice steps and missing slices are "
            "interpolated onto a regular grid) or refuse (such series are not analysed)"
        )
    return choice
