"""HL7 v2 over MLLP: one ORU^R01 from the outbox to a RIS, and its acknowledgement.

One connection per message, framed 0x0B ... 0x1C 0x0D, with a socket timeout; the receiver's
ACK must be AA (or CA) for this message's control id. AE/AR/CE/CR is a failed try whose error
carries the receiver's text, with this message's identifiers withheld (errors are logged;
patient identifiers never are). The messages are built by `triage.report.hl7`.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message

from triage.catalogue import DeliveryRow
from triage.errors import ConfigError, DeliveryError, StorageError, TriageError
from triage.report.hl7 import DESTINATION_PREFIX, unescape
from triage.store import ObjectStore

TIMEOUT_SECONDS = 30.0
START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
MAX_ACK_BYTES = 1 << 20
ACCEPTED = ("AA", "CA")


class MllpDestination:
    """``hl7:<host:port>``: each stored ORU^R01 over its own MLLP connection."""

    def __init__(self, store: ObjectStore, endpoint: str) -> None:
        self.store = store
        self.endpoint = endpoint.removeprefix(DESTINATION_PREFIX)

    def send(self, rows: list[DeliveryRow]) -> list[tuple[DeliveryRow, str | None]]:
        outcome: list[tuple[DeliveryRow, str | None]] = []
        for row in rows:
            try:
                send_message(self.endpoint, self.store.get(row.key))
            except StorageError as exc:
                outcome.append((row, f"cannot read the HL7 message from the store: {exc}"))
            except TriageError as exc:
                outcome.append((row, str(exc)))
            else:
                outcome.append((row, None))
        return outcome


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"HL7 endpoint {endpoint!r} is not host:port")
    return host, int(port)


def _read_frame(sock: socket.socket) -> bytes:
    data = b""
    while END_BLOCK not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the connection was closed before an acknowledgement came")
        data += chunk
        if len(data) > MAX_ACK_BYTES:
            raise ConnectionError(f"no end of the acknowledgement after {MAX_ACK_BYTES} bytes")
    start = data.find(START_BLOCK)
    return data[start + 1 if start >= 0 else 0 : data.index(END_BLOCK)]


def identifiers(message: str) -> set[str]:
    """Patient and order identifiers of one of our messages (PID-3, PID-5, ORC/OBR numbers)."""
    found: set[str] = set()
    for segment in message.replace("\n", "\r").split("\r"):
        fields = segment.split("|")
        wanted = {"PID": (3, 5), "ORC": (2, 3), "OBR": (2, 3, 18)}.get(fields[0], ())
        for index in wanted:
            if index < len(fields):
                for part in re.split(r"[\^&~]", fields[index]):
                    if len(part) >= 2:
                        found.add(unescape(part))
    return found


def withhold(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "(withheld)")
    return text


def read_ack(ack: str, control_id: str) -> tuple[str, str]:
    """(acknowledgement code, the receiver's text) from an ACK; DeliveryError when unreadable."""
    try:
        parsed = parse_message(
            ack.replace("\n", "\r").strip("\r"),
            find_groups=False,
            validation_level=VALIDATION_LEVEL.TOLERANT,
        )
        msa = parsed.msa
        code = str(msa.msa_1.to_er7())
        acknowledged = str(msa.msa_2.to_er7())
        text = str(msa.msa_3.to_er7())
        errors = [str(child.to_er7()) for child in parsed.children if child.name == "ERR"]
    except (HL7apyException, AttributeError, IndexError, KeyError, ValueError) as exc:
        raise DeliveryError(f"the acknowledgement cannot be read as HL7: {exc}") from exc
    if acknowledged and acknowledged != control_id:
        raise DeliveryError(
            f"the acknowledgement is for message {acknowledged!r}, not {control_id!r}"
        )
    detail = "; ".join(t for t in [unescape(text), *errors] if t)
    return code, detail[:500]


def control_id_of(message: str) -> str:
    fields = message.split("\r", 1)[0].split("|")
    return fields[9] if len(fields) > 9 else ""


def send_message(endpoint: str, message: bytes, timeout: float = TIMEOUT_SECONDS) -> None:
    """Send one ER7 message over MLLP and wait for its ACK; DeliveryError unless accepted."""
    host, port = parse_endpoint(endpoint)
    text = message.decode("utf-8", errors="replace")
    control_id = control_id_of(text)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(START_BLOCK + message + END_BLOCK)
            ack = _read_frame(sock).decode("utf-8", errors="replace")
    except TimeoutError as exc:
        raise DeliveryError(
            f"the HL7 receiver at {endpoint} did not acknowledge within {timeout:g} s"
        ) from exc
    except OSError as exc:
        raise DeliveryError(
            f"cannot deliver to the HL7 receiver at {endpoint} (is it listening, and is "
            f"TRIAGE_HL7_ENDPOINT right?): {exc.strerror or exc}"
        ) from exc
    try:
        code, detail = read_ack(ack, control_id)
    except DeliveryError as exc:
        raise DeliveryError(
            f"the HL7 receiver at {endpoint}: {withhold(str(exc), identifiers(text))}"
        ) from None
    if code not in ACCEPTED:
        detail = withhold(detail, identifiers(text))
        raise DeliveryError(
            f"the HL7 receiver at {endpoint} answered {code or 'no code'}"
            + (f": {detail}" if detail else "")
        )
