"""DIMSE basics shared by every stage: the status codes the node answers and reads, the AE it
opens associations with, and the C-STORE SCU that sends data sets to a DICOM node."""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Sequence
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.status import STATUS_SUCCESS, STATUS_WARNING, Status, code_to_category
from pynetdicom.transport import AssociationSocket

from triage.config import DicomNode
from triage.errors import DeliveryError

log = logging.getLogger(__name__)

# DIMSE statuses (PS3.4 B.2.3, PS3.7 C). pynetdicom names success and pending; the failure
# codes the node answers are named here, once.
SUCCESS = int(Status.SUCCESS)
PENDING = (int(Status.PENDING), 0xFF01)  # 0xFF01: pending, optional keys not supported
SOME_FAILED = 0xB000  # C-MOVE/C-GET or STOW: some sub-operations failed
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700  # storage failed: the sender keeps the data and retries
DATASET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC210
NO_STATUS = 0xFFFF  # no answer came (the association ended first)


class NoDelayAE(AE):
    """An AE whose outgoing sockets set TCP_NODELAY.

    pynetdicom writes the C-STORE command and its data set as separate PDUs; with Nagle's
    algorithm on, the second write waits for the peer's delayed ACK (~40 ms per instance on
    loopback). Overrides pynetdicom's socket factory (a private hook, kept small).
    """

    def _create_socket(self, assoc: Any, address: Any, tls_args: Any) -> AssociationSocket:
        sock = super()._create_socket(assoc, address, tls_args)
        if sock.socket is not None:
            sock.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def store_datasets(
    node: DicomNode,
    datasets: Sequence[Dataset],
    calling_ae: str,
    timeout: float = 30,
    tls: ssl.SSLContext | None = None,
) -> list[int]:
    """Send every data set; returns one DIMSE status per data set (0 is success).

    With ``tls`` the association runs over TLS, the peer verified against the node's host name.
    Raises DeliveryError when no association can be made at all.
    """
    if not datasets:
        return []
    ae = NoDelayAE(ae_title=calling_ae)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    # An acceptor accepts one transfer syntax per presentation context, so a data set kept in a
    # compressed syntax gets a context of its own with just that syntax (it is sent as it is,
    # never converted); uncompressed ones share a context offering both little endian forms.
    contexts: dict[tuple[str, tuple[str, ...]], None] = {}
    native = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
    for ds in datasets:
        file_meta = getattr(ds, "file_meta", None)
        syntax = (
            str(file_meta.TransferSyntaxUID)
            if file_meta and "TransferSyntaxUID" in file_meta
            else ""
        )
        offered = native if syntax in ("", *native) else (syntax,)
        contexts[(str(ds.SOPClassUID), offered)] = None
    if len(contexts) > 128:
        raise DeliveryError(
            "too many SOP class and transfer syntax pairs for one association (over 128)"
        )
    for sop_class, syntaxes in contexts:
        ae.add_requested_context(sop_class, list(syntaxes))
    try:
        tls_args = None if tls is None else (tls, node.host)
        assoc = ae.associate(node.host, node.port, ae_title=node.ae_title, tls_args=tls_args)
    except OSError as exc:
        raise DeliveryError(f"cannot connect to {node}: {exc}") from exc
    if not assoc.is_established:
        if assoc.is_rejected:
            raise DeliveryError(
                f"{node} rejected the association (calling AE {calling_ae}): check that the PACS "
                "knows this node's AE title"
            )
        refused = sorted({str(c.abstract_syntax) for c in assoc.rejected_contexts})
        if refused and not assoc.accepted_contexts:
            # it answered, and accepted none of what was offered: pynetdicom then aborts
            names = ", ".join(_sop_class_name(uid) for uid in refused)
            raise DeliveryError(
                f"{node} accepted none of the object types offered ({names}): configure the "
                f"PACS to accept these SOP classes from this node's AE title {calling_ae}"
            )
        if tls is not None:
            raise DeliveryError(
                f"no TLS association with {node}: is the PACS running and listening with TLS, "
                "and does its certificate verify against TRIAGE_TLS_CA for that host name? "
                "(the node's log has the TLS error)"
            )
        raise DeliveryError(f"cannot reach {node}: no association (is the PACS running?)")
    statuses: list[int] = []
    try:
        for ds in datasets:
            try:
                status = assoc.send_c_store(ds)
            except (ValueError, RuntimeError) as exc:
                log.error("C-STORE could not be sent: %s", exc)
                statuses.append(NO_STATUS)
                continue
            code = int(status.Status) if status and "Status" in status else NO_STATUS
            statuses.append(code)
            if not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    statuses.extend([NO_STATUS] * (len(datasets) - len(statuses)))
    return statuses


def _sop_class_name(uid: str) -> str:
    name = UID(uid).name
    return f"{name} ({uid})" if name and name != uid else uid


def is_success(status: int) -> bool:
    """Success and warnings (e.g. 0xB000, 0xB006, 0xB007 for C-STORE) mean the peer stored it."""
    return status != NO_STATUS and code_to_category(status) in (STATUS_SUCCESS, STATUS_WARNING)
