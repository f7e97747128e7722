"""The DICOM Storage SCP: receive instances, store them durably, catalogue them, then answer.

Rule: success (0x0000) is answered only after the instance is in the object store (fsynced) and
in the catalogue. Any storage failure answers 0xA700 so the sender keeps the data and retries.
Data that arrived but cannot be used is kept in ``quarantine/`` with the reason, never dropped.
"""

from __future__ import annotations

import io
import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    UID,
    CTImageStorage,
    EnhancedCTImageStorage,
    EnhancedMRImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
    LegacyConvertedEnhancedMRImageStorage,
    MRImageStorage,
)
from pynetdicom import AE, evt
from pynetdicom.transport import ThreadedAssociationServer

from triage.catalogue import Catalogue, InstanceRecord
from triage.errors import StorageError
from triage.store import ObjectStore, instance_key

log = logging.getLogger(__name__)

VERIFICATION = "1.2.840.10008.1.1"
STORAGE_CLASSES: tuple[str, ...] = (
    CTImageStorage,
    EnhancedCTImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
    MRImageStorage,
    EnhancedMRImageStorage,
    LegacyConvertedEnhancedMRImageStorage,
)

# What pydicom with the pylibjpeg plugins can decode; video and JPIP syntaxes are not offered
ACCEPTED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old scanners)
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (12-bit)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
)

RUNNING_MARKER = "state/receiver-running"

# DIMSE C-STORE statuses (PS3.4 B.2.3) and the pynetdicom "cannot understand" code
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC210

_NATIVE_SYNTAXES = {
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
}


@dataclass
class ReceiveStats:
    """Counters an operator (and the tests) can read while the receiver runs."""

    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)


class Rejected(Exception):
    """The instance cannot be used; carries the DICOM status and the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def describe_instance(ds: Dataset, transfer_syntax: str, size: int) -> InstanceRecord:
    """Read the header values the catalogue needs; Rejected when the instance is unusable."""
    try:
        uids = {
            k: _text(ds, k)
            for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
        }
    except Exception as exc:  # pydicom raises many types on corrupt elements
        raise Rejected(CANNOT_UNDERSTAND, f"the header cannot be decoded: {exc}") from exc
    missing = [k for k, v in uids.items() if not v]
    if missing:
        raise Rejected(
            DATASET_DOES_NOT_MATCH, f"required attribute(s) missing: {', '.join(missing)}"
        )
    bad = [k for k, v in uids.items() if not UID(v).is_valid]
    if bad:
        raise Rejected(DATASET_DOES_NOT_MATCH, f"invalid UID in {', '.join(bad)}")
    _check_pixel_data(ds, transfer_syntax)
    try:
        return InstanceRecord(
            study_instance_uid=uids["StudyInstanceUID"],
            series_instance_uid=uids["SeriesInstanceUID"],
            sop_instance_uid=uids["SOPInstanceUID"],
            sop_class_uid=uids["SOPClassUID"],
            transfer_syntax_uid=transfer_syntax,
            key=instance_key(
                uids["StudyInstanceUID"], uids["SeriesInstanceUID"], uids["SOPInstanceUID"]
            ),
            size=size,
            modality=_text(ds, "Modality")[:16],
            body_part=_text(ds, "BodyPartExamined")[:64],
            series_description=_text(ds, "SeriesDescription")[:128],
            series_number=_text(ds, "SeriesNumber")[:16],
            image_type=_text(ds, "ImageType")[:128],
            accession_number=_text(ds, "AccessionNumber")[:64],
            patient_id=_text(ds, "PatientID")[:64],
            study_description=_text(ds, "StudyDescription")[:128],
            study_date=_text(ds, "StudyDate")[:8],
        )
    except StorageError as exc:
        raise Rejected(DATASET_DOES_NOT_MATCH, str(exc)) from exc
    except Exception as exc:
        raise Rejected(CANNOT_UNDERSTAND, f"the header cannot be decoded: {exc}") from exc


def _check_pixel_data(ds: Dataset, transfer_syntax: str) -> None:
    """Refuse native pixel data shorter than its header says (a truncated transfer)."""
    if "PixelData" not in ds or transfer_syntax not in _NATIVE_SYNTAXES:
        return
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.BitsAllocated)
        expected = rows * cols * frames * samples * bits // 8
        actual = len(ds.PixelData)
    except Exception as exc:
        raise Rejected(DATASET_DOES_NOT_MATCH, f"image pixel attributes unusable: {exc}") from exc
    if actual < expected:
        raise Rejected(
            DATASET_DOES_NOT_MATCH,
            f"pixel data is truncated: {actual} bytes where Rows x Columns x frames says "
            f"{expected}",
        )


class Receiver:
    """Storage SCP bound to a store and a catalogue."""

    def __init__(
        self,
        store: ObjectStore,
        catalogue: Catalogue,
        ae_title: str,
    ) -> None:
        self.store = store
        self.catalogue = catalogue
        self.ae_title = ae_title
        self.stats = ReceiveStats()
        self._server: ThreadedAssociationServer | None = None

    def handle_store(self, event: evt.Event) -> int:
        """EVT_C_STORE handler: returns a status, never raises."""
        try:
            raw = event.encoded_dataset()
        except Exception:
            log.exception("could not read the received data set")
            self.stats.add("failed")
            return CANNOT_UNDERSTAND
        transfer_syntax = str(event.context.transfer_syntax)
        try:
            try:
                ds = event.dataset
            except Exception as exc:
                raise Rejected(CANNOT_UNDERSTAND, f"the data set cannot be decoded: {exc}") from exc
            record = describe_instance(ds, transfer_syntax, len(raw))
            requested = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "")
            if requested and requested != record.sop_instance_uid:
                raise Rejected(
                    DATASET_DOES_NOT_MATCH,
                    "SOPInstanceUID in the data set differs from the C-STORE request",
                )
        except Rejected as rej:
            self._quarantine(raw, rej.reason)
            self.stats.add("rejected")
            log.warning("rejected an instance (status 0x%04X): %s", rej.status, rej.reason)
            return rej.status
        try:
            # no look-up first: a duplicate lands on the same key, and the catalogue says so
            self.store.put(record.key, raw)
            new = self.catalogue.record_instance(record)
        except StorageError as exc:
            self.stats.add("failed")
            log.error("could not store an instance, answered 0xA700 so the sender retries: %s", exc)
            return OUT_OF_RESOURCES
        except Exception:
            self.stats.add("failed")
            log.exception("unexpected failure while storing; answered 0xA700")
            return OUT_OF_RESOURCES
        self.stats.add("stored" if new else "duplicates")
        return SUCCESS

    def _quarantine(self, raw: bytes, reason: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        key = f"quarantine/{stamp}-{uuid.uuid4().hex[:12]}"
        try:
            self.store.put(f"{key}.dcm", raw)
            self.store.put(f"{key}.reason.txt", reason.encode())
        except StorageError as exc:
            log.error("could not quarantine rejected data: %s", exc)

    def application_entity(self) -> AE:
        ae = AE(ae_title=self.ae_title)
        ae.require_called_aet = True
        ae.maximum_pdu_size = 0  # let senders use PDUs as large as they like
        ae.network_timeout = 60
        ae.acse_timeout = 30
        ae.dimse_timeout = 60
        ae.maximum_associations = 32
        for sop_class in STORAGE_CLASSES:
            ae.add_supported_context(sop_class, list(ACCEPTED_TRANSFER_SYNTAXES))
        ae.add_supported_context(VERIFICATION)
        return ae

    def reconcile(self) -> int:
        """Catalogue every stored instance that has no catalogue row; returns how many.

        A crash or power loss can lose the last catalogue commits (they are not fsynced one by
        one), never the stored bytes: this puts the catalogue back in line with the store.
        """
        known = self.catalogue.catalogued_keys("raw/")
        added = 0
        for key in self.store.keys("raw/"):
            if key in known:
                continue
            try:
                data = self.store.get(key)
                ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
                record = describe_instance(ds, str(ds.file_meta.TransferSyntaxUID), len(data))
            except (StorageError, Rejected, InvalidDicomError, AttributeError) as exc:
                log.warning("stored object %s cannot be catalogued: %s", key, exc)
                continue
            if record.key != key:
                log.warning("stored object %s does not match its header; left alone", key)
                continue
            added += self.catalogue.record_instance(record)
        if added:
            log.warning("catalogued %d stored instance(s) missing after an unclean stop", added)
        return added

    def start(self, host: str, port: int) -> ThreadedAssociationServer:
        """Listen in background threads; returns the server (its port is bound).

        A marker in the store says the receiver is running; finding it at start means the last
        run did not stop cleanly, so the catalogue is reconciled with the store first.
        """
        if self.store.exists(RUNNING_MARKER):
            self.reconcile()
        self.store.put(RUNNING_MARKER, b"running")
        ae = self.application_entity()
        handlers: list[Any] = [(evt.EVT_C_STORE, self.handle_store)]
        try:
            server = ae.start_server((host, port), block=False, evt_handlers=handlers)
            assert server is not None
        except OSError as exc:
            raise StorageError(
                f"cannot listen on {host}:{port} ({exc.strerror}): is another receiver running? "
                "Set TRIAGE_PORT to a free port"
            ) from exc
        self._server = server
        log.info("receiver %s listening on %s:%d", self.ae_title, host, server.server_address[1])
        return server

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the receiver is not started")
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
            self.store.delete(RUNNING_MARKER)
