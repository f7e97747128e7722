"""No patient identifiers in logs: the real node at TRIAGE_LOG_LEVEL=DEBUG, fed studies with
distinctive identifiers, must not write any of them to a log, stdout or stderr.

The node runs as `triage serve` sets it up (configure_logging, Prefect flows, Orthanc as the
PACS). It receives an analysable study, one with a non-conformant birth date (pydicom warns
about such values), a study that cannot be analysed, instances that are rejected and
quarantined, and an association from an AE title that is not allowed. Everything logged (root
handler, warnings, stdout and stderr of the process) is then searched for every identifier.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from support.factories import phantom_ct_series
from support.modality import storescu
from support.nodes import node_env, running_node
from support.waiting import wait_until

from triage.app.demo import DemoStudy, write_demo_studies
from triage.app.runtime import QUIET_LIBRARIES, configure_logging
from triage.config import DicomNode
from triage.dimse import DATASET_DOES_NOT_MATCH, store_datasets

MODALITY = "MODALITY"
IDENTIFYING = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "AccessionNumber",
    "OtherPatientIDs",
    "ReferringPhysicianName",
)


def identifiers(
    tag: str, birth_date: str = "19310514", name: str = "Quenzlerova{tag}^Wilhelmina"
) -> dict[str, str]:
    """Values no log line can contain by chance (`tag` makes each study's own)."""
    return {
        "PatientName": name.format(tag=tag),
        "PatientID": f"PIDQZX{tag}7351",
        "PatientBirthDate": birth_date,
        "AccessionNumber": f"ACCQZX{tag}905",
        "OtherPatientIDs": f"OPIDQZX{tag}44",
        "ReferringPhysicianName": f"Drumheller{tag}^Octavia",
    }


def forbidden_patterns(values: dict[str, str]) -> dict[str, re.Pattern[str]]:
    """Each value, each name component, and a date in any common spelling."""
    patterns: dict[str, re.Pattern[str]] = {}
    for keyword, value in values.items():
        if keyword == "PatientBirthDate":
            digits = re.sub(r"\D", "", value)
            y, m, d = digits[:4], digits[4:6], digits[6:8]
            spellings = "|".join(re.escape(s) for s in (digits, f"{y}-{m}-{d}", f"{y}/{m}/{d}"))
            patterns[f"{keyword} {value}"] = re.compile(rf"(?<!\d)(?:{spellings})(?!\d)")
            continue
        for part in {value, *re.split(r"[\^ ]", value)} - {""}:
            patterns[f"{keyword} {part}"] = re.compile(re.escape(part), re.IGNORECASE)
    return patterns


def set_identifiers(ds: Dataset, values: dict[str, str]) -> Dataset:
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def relabel_study(study: DemoStudy, values: dict[str, str]) -> None:
    """Rewrite every file of a written study with the given identifiers."""
    for path in sorted(study.folder.glob("*.dcm")):
        with pydicom.config.disable_value_validation():  # the node, not the test, reads them
            ds = pydicom.dcmread(path)
            set_identifiers(ds, values).save_as(path, enforce_file_format=True)


# -- capturing everything ---------------------------------------------------------------------


class Everything(logging.Handler):
    """Keeps every record that reaches the root logger, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def node_logging() -> Iterator[Everything]:
    """The node's logging set-up at DEBUG, plus a handler that keeps everything; the process's
    logging is put back afterwards."""
    from pynetdicom import _config as pynetdicom_config

    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in QUIET_LIBRARIES)]
    loggers += [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    levels = [(lg, lg.level) for lg in loggers]
    make_record = logging.getLogRecordFactory()
    identifiers_logged = (
        pynetdicom_config.LOG_REQUEST_IDENTIFIERS,
        pynetdicom_config.LOG_RESPONSE_IDENTIFIERS,
    )
    capture = Everything()
    configure_logging("DEBUG")  # what `triage serve` does with TRIAGE_LOG_LEVEL=DEBUG
    logging.getLogger().addHandler(capture)
    try:
        yield capture
    finally:
        logging.getLogger().removeHandler(capture)
        logging.captureWarnings(False)
        logging.setLogRecordFactory(make_record)
        (
            pynetdicom_config.LOG_REQUEST_IDENTIFIERS,
            pynetdicom_config.LOG_RESPONSE_IDENTIFIERS,
        ) = identifiers_logged
        for lg, level in levels:
            lg.setLevel(level)


# -- the node ---------------------------------------------------------------------------------


def unusable_instances(values: dict[str, str]) -> list[Dataset]:
    """Instances the receiver answers 0xA900 and quarantines: pixel data cut short, a study
    without StudyInstanceUID."""
    truncated, no_study = phantom_ct_series("test_no_phi_in_logs", 5, (32, 32, 2))
    truncated = set_identifiers(copy.deepcopy(truncated), values)
    truncated.PixelData = truncated.PixelData[:100]
    no_study = set_identifiers(copy.deepcopy(no_study), values)
    del no_study.StudyInstanceUID
    return [truncated, no_study]


# -- the logging set-up on its own -----------------------------------------------------------


def test_debug_level_keeps_dicom_libraries_at_warning(node_logging: Everything) -> None:
    from pynetdicom import _config as pynetdicom_config

    assert logging.getLogger().getEffectiveLevel() == logging.DEBUG
    assert logging.getLogger("triage.receive.receiver").isEnabledFor(logging.DEBUG)
    for name in ("pynetdicom", "pynetdicom.dimse", "pydicom", "highdicom.sr", "prefect"):
        assert logging.getLogger(name).getEffectiveLevel() >= logging.WARNING, name
    assert not pynetdicom_config.LOG_REQUEST_IDENTIFIERS
    assert not pynetdicom_config.LOG_RESPONSE_IDENTIFIERS


@pytest.mark.parametrize(
    ("logger", "message", "args", "value"),
    [
        ("pydicom", "Invalid value for VR DA: '1931-05-14'.", (), "1931"),
        ("pydicom", "Invalid value for VR %s: %r.", ("PN", "Doe^Jane"), "Doe"),
        ("highdicom.base", 'argument "patient_name" is potentially invalid: "DOE J"', (), "DOE"),
        (
            "py.warnings",
            'x.py:1: UserWarning: The string "DOE JANE" is unlikely to represent the intended '
            "person name since it contains only a single component.\n  check(name)\n",
            (),
            "DOE",
        ),
    ],
)
def test_library_messages_lose_the_values_they_quote(
    node_logging: Everything, logger: str, message: str, args: tuple[str, ...], value: str
) -> None:
    logging.getLogger(logger).warning(message, *args)
    [line] = node_logging.lines
    assert value not in line
    assert "(value withheld from the log)" in line


def test_the_node_own_messages_are_left_alone(node_logging: Everything) -> None:
    logging.getLogger("triage.test").warning("Invalid value for VR DA: %r", "kept")
    assert node_logging.lines == ["WARNING triage.test: Invalid value for VR DA: 'kept'"]


# -- the node at DEBUG ------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_no_patient_identifier_reaches_any_log(
    tmp_path: Path,
    orthanc: Any,
    prefect_harness: None,
    node_logging: Everything,
    capfd: pytest.CaptureFixture[str],
) -> None:
    made = write_demo_studies(
        tmp_path / "studies", count=2, seed=5, shape=(128, 128, 24), spacing=(1.8, 1.8, 5.0)
    )
    analysable, odd_birth_date, not_analysable = made
    per_study = {
        analysable.study_instance_uid: identifiers("A"),
        # as old systems write them: a birth date with dashes, a name without carets
        odd_birth_date.study_instance_uid: identifiers(
            "B", birth_date="1932-06-25", name="QUENZLEROVA{tag} WILHELMINA"
        ),
        not_analysable.study_instance_uid: identifiers("C"),
    }
    for study in made:
        relabel_study(study, per_study[study.study_instance_uid])
    rejected_values = identifiers("D", birth_date="19330807")
    refused_values = identifiers("E", birth_date="19341109")
    refused_folder = tmp_path / "refused"
    refused_folder.mkdir()
    for path in analysable.folder.glob("*.dcm"):
        ds = set_identifiers(pydicom.dcmread(path), refused_values)
        ds.save_as(refused_folder / path.name, enforce_file_format=True)

    env = node_env(tmp_path / "home", orthanc.node, LOG_LEVEL="DEBUG", ALLOWED_AES=MODALITY)
    with running_node(env) as node:
        refused = storescu(refused_folder, node.port, calling="INTRUDER")
        assert refused.returncode != 0
        for study in made:
            sent = storescu(study.folder, node.port, calling=MODALITY)
            assert sent.returncode == 0, sent.stdout + sent.stderr
        target = DicomNode("TRIAGE", "127.0.0.1", node.port)
        statuses = store_datasets(target, unusable_instances(rejected_values), MODALITY)
        assert statuses == [DATASET_DOES_NOT_MATCH] * 2

        def finished() -> bool:
            rows = {r.study_instance_uid: r for r in node.svc.catalogue.worklist()}
            delivered = {d.study_instance_uid for d in node.svc.catalogue.deliveries(["delivered"])}
            return (
                all(rows.get(uid) and rows[uid].state != "receiving" for uid in per_study)
                and all(r.state in ("triaged", "not analysed") for r in rows.values())
                and {analysable.study_instance_uid, odd_birth_date.study_instance_uid} <= delivered
            )

        wait_until(finished, 240, "every study triaged and its SR delivered")
        rows = {r.study_instance_uid: r for r in node.svc.catalogue.worklist()}
        assert rows[analysable.study_instance_uid].state == "triaged"
        assert rows[odd_birth_date.study_instance_uid].state == "triaged"
        assert rows[not_analysable.study_instance_uid].state == "not analysed"
        assert node.receiver.stats.rejected == 2
        assert node.receiver.stats.refused_associations == 1

    out, err = capfd.readouterr()
    logged = "\n".join(node_logging.lines)
    text = "\n".join([logged, out, err])
    leaks = [
        f"{what}: {line.strip()[:200]}"
        for values in [*per_study.values(), rejected_values, refused_values]
        for what, pattern in forbidden_patterns(values).items()
        for line in text.splitlines()
        if pattern.search(line)
    ]
    assert leaks == [], "patient identifiers in the logs:\n" + "\n".join(leaks)
    assert "rejected association from AE 'INTRUDER'" in logged  # the capture works
    # the odd values were met, and reported without themselves
    assert f"PatientBirthDate of study {odd_birth_date.study_instance_uid} is not valid" in logged
    assert "unlikely to represent the intended person name" in logged  # highdicom's warning
