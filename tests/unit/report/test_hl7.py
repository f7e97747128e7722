"""HL7 v2 ORU^R01 over MLLP: a real MLLP listener (hl7apy's MLLPServer) on 127.0.0.1 receives
the message the pipeline queued, acknowledges it, and the test parses it with hl7apy."""

from __future__ import annotations

import io
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.mllp import AbstractHandler, MLLPServer
from hl7apy.parser import parse_message
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from support.factories import phantom_ct_series
from support.orthanc import free_port
from support.reporting import record_results

from triage.app.services import Services
from triage.catalogue import DELIVERED, PENDING, Catalogue
from triage.config import Settings, load_settings
from triage.deliver.mllp import send_message
from triage.deliver.outbox import DeliverySummary, deliver_due
from triage.dimse import SUCCESS
from triage.errors import DeliveryError
from triage.receive.receiver import Receiver
from triage.report.hl7 import escape, not_analysed_oru, oru_r01, unescape
from triage.results import ModelResult, Priority
from triage.store import LocalStore

PATIENT_ID, ACCESSION, PATIENT_NAME = "HL7PAT-4711", "ACCX-0815", "Doe^Jane"


class Listener:
    """A RIS's MLLP endpoint: keeps each message it gets and answers ``code`` (AA, AE, AR)."""

    def __init__(self, port: int = 0, code: str = "AA", text: str = "") -> None:
        self.code, self.text = code, text
        self.received: list[str] = []
        self.server = MLLPServer("127.0.0.1", port, {"ORU^R01^ORU_R01": (_Acknowledge, self)})
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def acknowledge(self, message: str) -> str:
        self.received.append(message)
        incoming = parse_message(message, find_groups=False)
        ack = Message("ACK", version="2.5")
        ack.msh.msh_3 = "RIS"
        ack.msh.msh_9 = "ACK^R01^ACK"
        ack.msh.msh_10 = f"A{len(self.received)}"
        ack.msh.msh_11 = "P"
        ack.msa.msa_1 = self.code
        ack.msa.msa_2 = incoming.msh.msh_10.to_er7()
        if self.text:
            ack.msa.msa_3 = escape(self.text)
        return "\x0b" + ack.to_er7() + "\r\x1c\r"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


class _Acknowledge(AbstractHandler):  # type: ignore[misc]
    def __init__(self, message: str, listener: Listener) -> None:
        super().__init__(message)
        self.listener = listener

    def reply(self) -> str:
        return self.listener.acknowledge(self.incoming_message)


@pytest.fixture
def listener() -> Iterator[Listener]:
    ris = Listener()
    yield ris
    ris.stop()


def _images(tag: str) -> list[Dataset]:
    return phantom_ct_series(
        tag,
        shape=(16, 16, 2),
        patient_id=PATIENT_ID,
        accession_number=ACCESSION,
        patient_name=PATIENT_NAME,
    )


def _part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


class Node:
    """A node whose pipeline queues an ORU^R01 for TRIAGE_HL7_ENDPOINT beside each SR."""

    def __init__(self, home: Path, endpoint: str, **env: str) -> None:
        self.settings: Settings = load_settings(
            environ={
                "TRIAGE_HOME": str(home),
                "TRIAGE_HL7_ENDPOINT": endpoint,
                "TRIAGE_DELIVERY_MAX_TRIES": "3",
                "TRIAGE_DELIVERY_BACKOFF_SECONDS": "10",
                **env,
            }
        )
        self.store = LocalStore(self.settings.store_path)
        self.catalogue = Catalogue(self.settings.database_url)
        self.svc = Services(self.settings, self.store, self.catalogue)

    def triaged(self, tag: str, probability: float) -> tuple[str, str]:
        """Receive a small study, report a result on it; (study UID, SR SOP Instance UID)."""
        images = _images(tag)
        receiver = Receiver(self.store, self.catalogue, "TRIAGE")
        assert all(receiver.accept(_part10(ds)) == SUCCESS for ds in images)
        result = ModelResult(
            "ich-detector",
            "1.0.0",
            codes.SCT.IntracranialHemorrhage,
            probability,
            0.5,
            Priority.URGENT if probability >= 0.5 else Priority.ROUTINE,
            str(images[0].SeriesInstanceUID),
        )
        study = str(images[0].StudyInstanceUID)
        return study, record_results(self.svc, study, [result])

    def deliver(self, *, all_pending: bool = False) -> DeliverySummary:
        only = self.catalogue.deliveries([PENDING]) if all_pending else None
        return deliver_due(self.store, self.catalogue, self.settings, only=only)


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Any]:
    made: list[Node] = []

    def make(endpoint: str, **env: str) -> Node:
        made.append(Node(tmp_path / f"home{len(made)}", endpoint, **env))
        return made[-1]

    yield make
    for n in made:
        n.catalogue.close()


@pytest.mark.parametrize(
    ("probability", "hl7_priority", "sct_priority"),
    [(0.93, "S", "103391001"), (0.12, "R", "373115008")],
    ids=["urgent", "routine"],
)
def test_oru_r01_reaches_the_ris_with_accession_finding_and_priority(
    listener: Listener, make_node: Any, probability: float, hl7_priority: str, sct_priority: str
) -> None:
    node = make_node(f"127.0.0.1:{listener.port}", TRIAGE_PACS="PACS@127.0.0.1:4242")
    study, sop = node.triaged(f"hl7-{hl7_priority}", probability)
    rows = {r.destination: r for r in node.catalogue.deliveries()}
    # beside the SR (same SOP Instance UID), one row per destination
    assert set(rows) == {"PACS@127.0.0.1:4242", f"hl7:127.0.0.1:{listener.port}"}
    hl7_row = rows[f"hl7:127.0.0.1:{listener.port}"]
    assert hl7_row.sop_instance_uid == sop
    assert hl7_row.key == f"results/{study}/{sop}.hl7"

    summary = deliver_due(node.store, node.catalogue, node.settings, only=[hl7_row])
    assert summary.delivered == 1
    (row,) = [r for r in node.catalogue.deliveries() if r.id == hl7_row.id]
    assert (row.state, row.attempts, row.last_error) == (DELIVERED, 1, None)

    (text,) = listener.received
    msg = parse_message(text, find_groups=True, validation_level=VALIDATION_LEVEL.STRICT)
    assert msg.validate()
    assert msg.msh.msh_9.to_er7() == "ORU^R01^ORU_R01"
    assert msg.msh.msh_12.to_er7() == "2.5"
    result = msg.oru_r01_patient_result
    assert result.oru_r01_patient.pid.pid_3.cx_1.to_er7() == PATIENT_ID
    assert result.oru_r01_patient.pid.pid_5.to_er7() == PATIENT_NAME
    order = result.oru_r01_order_observation
    assert order.orc.orc_2.to_er7() == ACCESSION
    assert order.obr.obr_2.to_er7() == ACCESSION
    assert order.obr.obr_3.to_er7() == ACCESSION
    assert order.obr.obr_18.to_er7() == ACCESSION
    assert order.obr.obr_25.to_er7() == "P"  # preliminary: not reviewed by a radiologist
    # the priority, where RIS worklists read it
    assert order.oru_r01_timing_qty.tq1.tq1_9.cwe_1.to_er7() == hl7_priority
    assert order.obr.obr_27.tq_6.to_er7() == hl7_priority
    finding, score, priority, check = (o.obx for o in order.oru_r01_observation)
    assert check.obx_5.to_er7() == "262008008^Not performed^SCT"  # a model with no reference
    assert finding.obx_3.to_er7() == "121071^Finding^DCM"
    assert finding.obx_5.to_er7().split("^")[0] == "1386000"
    assert finding.obx_5.to_er7().split("^")[2] == "SCT"
    assert finding.obx_8.to_er7() == ("A" if probability >= 0.5 else "N")
    assert score.obx_2.to_er7() == "NM"
    assert float(score.obx_5.to_er7()) == pytest.approx(probability)
    assert priority.obx_3.to_er7() == "260870009^Priority^SCT"
    assert priority.obx_5.to_er7().split("^")[0] == sct_priority

    assert node.deliver().delivered == 0  # nothing left for the RIS
    assert len(listener.received) == 1


def test_listener_down_retries_then_delivers_when_it_is_back(make_node: Any) -> None:
    port = free_port()
    node = make_node(f"127.0.0.1:{port}")
    node.triaged("hl7-down", 0.8)
    assert node.deliver().retrying == 1
    (row,) = node.catalogue.deliveries()
    assert (row.state, row.attempts) == (PENDING, 1)
    assert f"cannot deliver to the HL7 receiver at 127.0.0.1:{port}" in (row.last_error or "")

    ris = Listener(port)
    try:
        assert node.deliver(all_pending=True).delivered == 1
        assert node.deliver(all_pending=True).delivered == 0
    finally:
        ris.stop()
    (row,) = node.catalogue.deliveries()
    assert (row.state, row.attempts) == (DELIVERED, 2)
    assert len(ris.received) == 1


def test_nak_is_a_failed_try_with_its_text_and_no_identifier_in_the_log(
    make_node: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ris = Listener(code="AE", text=f"Unknown order {ACCESSION} for patient {PATIENT_ID}")
    try:
        node = make_node(f"127.0.0.1:{ris.port}")
        with caplog.at_level(logging.DEBUG):
            node.triaged("hl7-nak", 0.8)
            summary = node.deliver()
    finally:
        ris.stop()
    assert (summary.delivered, summary.retrying) == (0, 1)
    (row,) = node.catalogue.deliveries()
    assert (row.state, row.attempts) == (PENDING, 1)
    error = row.last_error or ""
    assert f"the HL7 receiver at 127.0.0.1:{ris.port} answered AE" in error
    assert "Unknown order (withheld) for patient (withheld)" in error
    assert "answered AE" in caplog.text
    for identifier in (ACCESSION, PATIENT_ID, "Doe", "Jane"):
        assert identifier not in error
        assert identifier not in caplog.text


def test_rejected_ar_and_dead_after_max_tries(make_node: Any) -> None:
    ris = Listener(code="AR", text="message rejected")
    try:
        node = make_node(f"127.0.0.1:{ris.port}")
        node.triaged("hl7-ar", 0.2)
        assert node.deliver().retrying == 1
        assert node.deliver(all_pending=True).retrying == 1
        assert node.deliver(all_pending=True).dead == 1
    finally:
        ris.stop()
    (row,) = node.catalogue.deliveries()
    assert (row.state, row.attempts) == ("dead", 3)
    assert "answered AR: message rejected" in (row.last_error or "")
    assert len(ris.received) == 3


def test_a_receiver_that_never_acknowledges_times_out() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        with pytest.raises(DeliveryError, match=r"did not acknowledge within 0\.5 s"):
            send_message(f"127.0.0.1:{port}", b"MSH|^~\\&|TRIAGE\r", timeout=0.5)


def test_delimiters_in_dicom_values_are_escaped() -> None:
    images = phantom_ct_series(
        "hl7-escape",
        shape=(16, 16, 2),
        patient_id="A|B^C",
        accession_number="X&Y~Z\\W",
        patient_name="O'Neil^Mary^^Dr^Jr",
    )
    result = ModelResult(
        "m", "1", codes.SCT.IntracranialHemorrhage, 0.7, 0.5, Priority.URGENT, "1.2.3"
    )
    text = oru_r01(images[0], result, sending_application="TRIAGE", control_id="C1")
    msg = parse_message(text, find_groups=True)
    pid = msg.oru_r01_patient_result.oru_r01_patient.pid
    assert unescape(pid.pid_3.cx_1.to_er7()) == "A|B^C"
    assert pid.pid_5.to_er7() == "O'Neil^Mary^^Jr^Dr"  # XPN puts the suffix before the prefix
    obr = msg.oru_r01_patient_result.oru_r01_order_observation.obr
    assert unescape(obr.obr_3.to_er7()) == "X&Y~Z\\W"
    assert msg.msh.msh_10.to_er7() == "C1"


def test_a_result_that_replaces_one_sent_before_is_a_correction() -> None:
    images = phantom_ct_series("hl7-corrected", shape=(16, 16, 2))
    result = ModelResult(
        "m", "1", codes.SCT.IntracranialHemorrhage, 0.7, 0.5, Priority.URGENT, "1.2.3"
    )
    text = oru_r01(images[0], result, sending_application="TRIAGE", corrected=True)
    msg = parse_message(text, find_groups=True, validation_level=VALIDATION_LEVEL.STRICT)
    order = msg.oru_r01_patient_result.oru_r01_order_observation
    assert order.obr.obr_25.to_er7() == "C"
    assert {o.obx.obx_11.to_er7() for o in order.oru_r01_observation} == {"C"}


def test_not_analysed_reaches_the_ris_in_coded_form_with_its_reason() -> None:
    images = phantom_ct_series("hl7-not-analysed", shape=(16, 16, 2))
    reason = "no series matches the model's rules | scout only"
    text = not_analysed_oru(
        images[0],
        model_name="m",
        model_version="1",
        reason=reason,
        sending_application="TRIAGE",
    )
    msg = parse_message(text, find_groups=True, validation_level=VALIDATION_LEVEL.STRICT)
    assert msg.validate()
    order = msg.oru_r01_patient_result.oru_r01_order_observation
    status, comment = (o.obx for o in order.oru_r01_observation)
    assert status.obx_3.to_er7() == "24587005^Image analysis^SCT"
    assert status.obx_5.to_er7() == "262008008^Not performed^SCT"
    assert comment.obx_2.to_er7() == "TX"
    assert unescape(comment.obx_5.to_er7()) == reason
    assert order.oru_r01_timing_qty.tq1.tq1_9.cwe_1.to_er7() == "R"
    assert order.obr.obr_25.to_er7() == "P"


def test_the_ris_gets_each_revision_and_the_second_is_a_correction(
    listener: Listener, make_node: Any
) -> None:
    node = make_node(f"127.0.0.1:{listener.port}")
    images = _images("hl7-revisions")
    receiver = Receiver(node.store, node.catalogue, "TRIAGE")
    assert all(receiver.accept(_part10(ds)) == SUCCESS for ds in images)
    study = str(images[0].StudyInstanceUID)
    series = str(images[0].SeriesInstanceUID)
    for probability in (0.2, 0.9):  # late images made it urgent: a new revision
        if probability > 0.5:
            assert node.catalogue.reopen(study)
        record_results(
            node.svc,
            study,
            [
                ModelResult(
                    "ich-detector",
                    "1.0.0",
                    codes.SCT.IntracranialHemorrhage,
                    probability,
                    0.5,
                    Priority.URGENT if probability >= 0.5 else Priority.ROUTINE,
                    series,
                )
            ],
        )
    assert node.deliver(all_pending=True).delivered == 2
    statuses = [
        parse_message(text, find_groups=True).oru_r01_patient_result.oru_r01_order_observation
        for text in listener.received
    ]
    assert [o.obr.obr_25.to_er7() for o in statuses] == ["P", "C"]
    assert [o.oru_r01_timing_qty.tq1.tq1_9.cwe_1.to_er7() for o in statuses] == ["R", "S"]


@pytest.mark.parametrize(
    ("score", "value"),
    [
        (19.6, "64957009^Uncertain^SCT"),
        (3.2, "LIKETRAINING^Like the training data^99TRIAGE"),
        (None, "262008008^Not performed^SCT"),
    ],
)
def test_the_ris_gets_the_out_of_distribution_check(score: float | None, value: str) -> None:
    images = phantom_ct_series("hl7-ood", shape=(16, 16, 2))
    result = ModelResult(
        "m",
        "1",
        codes.SCT.IntracranialHemorrhage,
        0.97,
        0.5,
        Priority.ROUTINE if score and score > 8.13 else Priority.URGENT,
        "1.2.3",
        ood_score=score,
        ood_threshold=None if score is None else 8.13,
    )
    text = oru_r01(images[0], result, sending_application="TRIAGE")
    msg = parse_message(text, find_groups=True, validation_level=VALIDATION_LEVEL.STRICT)
    assert msg.validate()
    order = msg.oru_r01_patient_result.oru_r01_order_observation
    observations = [o.obx for o in order.oru_r01_observation]
    check = observations[3]
    assert check.obx_3.to_er7() == "INPUTCHECK^Input compared with the training data^99TRIAGE"
    assert check.obx_5.to_er7() == value
    if score is None:
        assert len(observations) == 4
    else:
        (number,) = observations[4:]
        assert number.obx_3.to_er7() == "OODSCORE^Out-of-distribution score^99TRIAGE"
        assert float(number.obx_5.to_er7()) == pytest.approx(score)
