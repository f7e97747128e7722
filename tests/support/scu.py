"""A test SCU that sends a data set's bytes exactly as given over a real association.

pynetdicom's ``send_c_store`` encodes a Dataset (or reads a file) and refuses what it cannot
parse; to put truncated and corrupted bytes on the wire the C-STORE request is built here and
its data set is the payload as is. The request is sent and answered like any other: the
receiver sees a real association, real P-DATA and a real DIMSE message.
"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterable

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE

CALLING_AE = "FUZZER"
VERIFICATION = "1.2.840.10008.1.1"
TIMEOUT_S = 30  # ACSE, DIMSE and network timeouts: a receiver that hangs fails the test


def associate(
    port: int, contexts: Iterable[tuple[str, str]], called: str = "TRIAGE"
) -> Association:
    """An association proposing one presentation context per (SOP class, transfer syntax)."""
    ae = AE(ae_title=CALLING_AE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT_S
    for sop_class, syntax in contexts:
        ae.add_requested_context(sop_class, syntax)
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if assoc.is_established:
        # pynetdicom leaves Nagle on: each C-STORE then waits for a delayed ACK (about 40 ms)
        assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return assoc


def send_raw(
    assoc: Association,
    payload: bytes,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax: str,
) -> int | None:
    """C-STORE whose data set is ``payload`` as given; the status, or None without an answer
    within the DIMSE timeout."""
    req = C_STORE()
    req.MessageID = 1
    req.Priority = 2
    req.AffectedSOPClassUID = sop_class_uid
    req.AffectedSOPInstanceUID = sop_instance_uid
    req.DataSet = io.BytesIO(payload)
    context = assoc._get_valid_context(sop_class_uid, transfer_syntax, "scu")
    # as Association.send_c_store does: pause the reactor so that it does not take the answer
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.0001)
    try:
        assoc.dimse.send_msg(req, context.context_id)
        _, rsp = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    return None if rsp is None else int(rsp.Status)


def echo(port: int, called: str = "TRIAGE") -> int | None:
    """C-ECHO status, or None when the receiver does not answer."""
    assoc = associate(port, [], called)
    if not assoc.is_established:
        return None
    try:
        status = assoc.send_c_echo()
        return int(status.Status) if "Status" in status else None
    finally:
        assoc.release()


def store(port: int, datasets: Iterable[Dataset], called: str = "TRIAGE") -> list[int | None]:
    """C-STORE each data set (a Dataset with file meta) in its own SOP class and transfer
    syntax, on one association; the status of each (None: no answer). The association must be
    accepted; a data set whose context the receiver refused is a ValueError from pynetdicom."""
    datasets = list(datasets)
    contexts = {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}
    assoc = associate(port, sorted(contexts), called)
    assert assoc.is_established, "the receiver refused the association"
    try:
        statuses: list[int | None] = []
        for ds in datasets:
            status = assoc.send_c_store(ds)
            statuses.append(int(status.Status) if "Status" in status else None)
        return statuses
    finally:
        assoc.release()
