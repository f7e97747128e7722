"""Process set-up shared by the commands: logging, and Prefect's embedded defaults."""

from __future__ import annotations

import functools
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from triage.config import Settings

# Kept at WARNING or above whatever TRIAGE_LOG_LEVEL says: at DEBUG pynetdicom dumps PDUs and
# DIMSE messages and pydicom dumps data elements, patient data included; the others are noise.
QUIET_LIBRARIES = (
    "pynetdicom",
    "pydicom",
    "highdicom",
    "pylibjpeg",
    "openjpeg",
    "httpx",
    "urllib3",
    "dicomweb_client",
    "hl7apy",
    "prefect",
    "alembic",
    "aiosqlite",
)


def configure_logging(level: str) -> None:
    """The node's log on stderr at ``level`` (TRIAGE_LOG_LEVEL), with no patient identifiers."""
    numeric = getattr(logging, level)
    logging.basicConfig(
        level=numeric,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger().setLevel(numeric)  # also when a handler was installed before us
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.WARNING, numeric))
    keep_patient_data_out_of_logs()


# Library messages that quote a data value (a birth date, a name, an ID), and what they become:
# the value is withheld, what was wrong stays. pydicom: "Invalid value for VR DA: '1931-05-14'.";
# highdicom: 'The string "DOE JOHN" is unlikely to represent the intended person name ...' and
# 'value of argument "patient_name" is potentially invalid: "DOE JOHN"'.
_WITHHELD = "(value withheld from the log)"
_QUOTED_VALUES = (
    (re.compile(r"(Invalid value for VR \w+): .*?(\.?)$", re.MULTILINE), rf"\1 {_WITHHELD}\2"),
    (re.compile(r'(The string )".*?"( is unlikely to represent)', re.DOTALL), rf"\1{_WITHHELD}\2"),
    (re.compile(r"(is potentially invalid): .*?$", re.MULTILINE), rf"\1 {_WITHHELD}"),
)
_LIBRARIES_THAT_QUOTE_VALUES = ("pydicom", "highdicom", "py.warnings")


def withhold_dicom_values(record: logging.LogRecord) -> None:
    """Rewrites the record's message without the data values it quotes."""
    try:
        message = record.getMessage()
    except (TypeError, ValueError):  # logging would print its arguments as they are
        record.msg, record.args = "(a message that could not be formatted; withheld)", None
        return
    withheld = message
    for pattern, replacement in _QUOTED_VALUES:
        withheld = pattern.sub(replacement, withheld)
    if withheld != message:
        record.msg, record.args = withheld, None


def _from_library_that_quotes_values(name: str) -> bool:
    return any(name == lib or name.startswith(lib + ".") for lib in _LIBRARIES_THAT_QUOTE_VALUES)


def keep_patient_data_out_of_logs() -> None:
    """No PatientName, PatientID, birth date or accession number reaches a log.

    The node's own messages carry UIDs and internal ids only. Libraries: pynetdicom does not log
    C-FIND/C-GET/C-MOVE identifiers, Python warnings go through logging, and every record from
    pydicom or highdicom (any of their modules, whatever handler writes it) loses the values it
    quotes: the check is made where records are created. Idempotent.
    """
    from pynetdicom import _config as pynetdicom_config

    pynetdicom_config.LOG_REQUEST_IDENTIFIERS = False
    pynetdicom_config.LOG_RESPONSE_IDENTIFIERS = False
    logging.captureWarnings(True)
    make_record = logging.getLogRecordFactory()
    if getattr(make_record, "withholds_dicom_values", False):
        return

    def make_record_without_values(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        if _from_library_that_quotes_values(record.name):
            withhold_dicom_values(record)
        return record

    make_record_without_values.withholds_dicom_values = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make_record_without_values)


def configure_prefect(settings: Settings) -> None:
    """Run on Prefect's ephemeral API with its database under TRIAGE_HOME, unless the operator
    pointed PREFECT_API_URL at a Prefect server. Must run before prefect is imported."""
    prefect_home = settings.home / "prefect"
    prefect_home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(prefect_home))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_UI_ENABLED", "false")


_P = ParamSpec("_P")
_R = TypeVar("_R")
#: what an operator sets to keep Prefect's flow-run heartbeats (and their cost)
HEARTBEAT_SETTINGS = ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")


def without_flow_heartbeat(run: Callable[_P, _R]) -> Callable[_P, _R]:
    """``run`` (a Prefect flow) without Prefect's flow-run heartbeat thread, unless the
    operator set PREFECT_FLOWS_HEARTBEAT_FREQUENCY.

    Prefect 3 starts that thread with every flow run and joins it at the end; it sleeps in
    whole seconds, so each flow run ends up to 1 s after its work did (0.4-1 s measured per
    triage run, a sixth of a small study's time). The heartbeats only feed a Prefect
    automation that marks a silent flow run crashed; what re-runs the study of a dead worker
    is the node's own lease on it (TRIAGE_LEASE_SECONDS), which does not depend on them.
    """
    if any(name in os.environ for name in HEARTBEAT_SETTINGS):
        return run
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    @functools.wraps(run)
    def without(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            return run(*args, **kwargs)

    return without


class StopSignal:
    """Set by SIGTERM or SIGINT. The handler only assigns an attribute: it runs on the main
    thread between two bytecodes, and taking a lock there (`threading.Event.set`) deadlocks
    when the signal lands while the main thread holds that lock inside `Event.wait`."""

    def __init__(self) -> None:
        self.signum: int | None = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._received)

    def _received(self, signum: int, _frame: object) -> None:
        self.signum = signum

    def wait(self) -> None:
        while self.signum is None:
            time.sleep(0.2)  # a signal interrupts the sleep; the handler runs at once
