"""The DICOM Storage SCP: receive instances, store them durably, catalogue them, then answer.

Rule: success (0x0000) is answered only after the instance is in the object store (fsynced) and
in the catalogue. Any storage failure answers 0xA700 so the sender keeps the data and retries.
Data that arrived but cannot be used is kept in ``quarantine/`` with the reason, never dropped.
"""

from __future__ import annotations

import io
import logging
import ssl
import struct
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pydicom
from pydicom.dataelem import RawDataElement
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

from triage.attributes import (
    contrast_agent,
    frame_value,
    positive_number,
    readable_text,
    text_value,
)
from triage.catalogue import Catalogue, InstanceRecord
from triage.config import AllowedAE, Settings
from triage.dimse import (
    CANNOT_UNDERSTAND,
    DATASET_DOES_NOT_MATCH,
    OUT_OF_RESOURCES,
    SOP_CLASS_NOT_SUPPORTED,
    SUCCESS,
)
from triage.errors import StorageError
from triage.limits import MAX_FRAME_SIDE, MAX_PIXEL_BYTES
from triage.receive.access import AccessList, allowed_callers
from triage.receive.tls import receiver_context
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
    refused_associations: int = 0
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


def describe_instance(ds: Dataset, transfer_syntax: str, size: int) -> InstanceRecord:
    """Read the header values the catalogue needs; Rejected when the instance is unusable."""
    try:
        uids = {
            k: text_value(ds, k)
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
    kernel = frame_value(ds, "CTReconstructionSequence", "ConvolutionKernel")
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
            modality=text_value(ds, "Modality")[:16],
            body_part=text_value(ds, "BodyPartExamined")[:64],
            series_description=text_value(ds, "SeriesDescription")[:128],
            series_number=text_value(ds, "SeriesNumber")[:16],
            image_type=text_value(ds, "ImageType")[:128],
            accession_number=text_value(ds, "AccessionNumber")[:64],
            patient_id=text_value(ds, "PatientID")[:64],
            study_description=text_value(ds, "StudyDescription")[:128],
            study_date=text_value(ds, "StudyDate")[:8],
            # what series selection reads; an odd value reads as absent, never as a refusal
            convolution_kernel=kernel[:64],
            slice_thickness=positive_number(
                frame_value(ds, "PixelMeasuresSequence", "SliceThickness")
            ),
            contrast_agent=contrast_agent(ds)[:64],
            frames=min(int(positive_number(readable_text(ds, "NumberOfFrames")) or 1), 2**31 - 1),
        )
    except StorageError as exc:
        raise Rejected(DATASET_DOES_NOT_MATCH, str(exc)) from exc
    except Exception as exc:
        raise Rejected(CANNOT_UNDERSTAND, f"the header cannot be decoded: {exc}") from exc


def _check_complete(ds: Dataset) -> None:
    """Refuse a data set that ends before its elements do (a transfer cut short).

    pydicom reads what is there without complaint: a length running past the end gives a short
    value, and a data set cut inside an undefined-length element reads as no elements at all.
    """
    if len(ds) == 0:
        raise Rejected(
            CANNOT_UNDERSTAND, "no element could be read: the data set is cut short or not DICOM"
        )
    for tag in list(ds.keys()):  # the raw elements: iterating ds would convert each
        try:
            elem = ds.get_item(tag, keep_deferred=True)
        except Exception as exc:  # pydicom raises many types on corrupt elements
            raise Rejected(CANNOT_UNDERSTAND, f"the data set cannot be decoded: {exc}") from exc
        if not isinstance(elem, RawDataElement) or elem.length == 0xFFFFFFFF:
            continue
        arrived = len(elem.value or b"")
        if arrived < elem.length:
            raise Rejected(
                DATASET_DOES_NOT_MATCH,
                f"element {elem.tag} declares {elem.length} bytes where {arrived} arrived: "
                "the data set is truncated",
            )


def _check_pixel_data(ds: Dataset, transfer_syntax: str) -> None:
    """Refuse pixel data that cannot be what the header says, before anything allocates for it.

    Absurd declared sizes (over MAX_FRAME_SIDE a side, over MAX_PIXEL_BYTES decoded), native
    data shorter than declared (a truncated transfer) and compressed data that is not complete
    encapsulated fragments are answered 0xA900 with the reason.
    """
    if "PixelData" not in ds:
        return
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.BitsAllocated)
        encapsulated = ds["PixelData"].is_undefined_length
        actual = len(ds.PixelData)
    except Exception as exc:
        raise Rejected(DATASET_DOES_NOT_MATCH, f"image pixel attributes unusable: {exc}") from exc
    declared = f"Rows {rows}, Columns {cols}, NumberOfFrames {frames}, SamplesPerPixel {samples}"
    if min(rows, cols, frames) < 1 or not 1 <= samples <= 4:
        raise Rejected(DATASET_DOES_NOT_MATCH, f"image size is not usable: {declared}")
    if bits not in (1, 8, 16, 32, 64):
        raise Rejected(DATASET_DOES_NOT_MATCH, f"BitsAllocated {bits} is not 1, 8, 16, 32 or 64")
    if rows > MAX_FRAME_SIDE or cols > MAX_FRAME_SIDE:
        raise Rejected(
            DATASET_DOES_NOT_MATCH,
            f"frames of {rows} x {cols} pixels exceed the limit of "
            f"{MAX_FRAME_SIDE} x {MAX_FRAME_SIDE}",
        )
    expected = (rows * cols * frames * samples * bits + 7) // 8
    if expected > MAX_PIXEL_BYTES:
        raise Rejected(
            DATASET_DOES_NOT_MATCH,
            f"the header declares {expected} bytes of decoded pixel data ({declared}, "
            f"BitsAllocated {bits}), over the limit of {MAX_PIXEL_BYTES} bytes per instance",
        )
    if transfer_syntax in _NATIVE_SYNTAXES:
        if encapsulated:
            raise Rejected(
                DATASET_DOES_NOT_MATCH,
                f"pixel data is encapsulated although transfer syntax {transfer_syntax} is native",
            )
        if actual < expected:
            raise Rejected(
                DATASET_DOES_NOT_MATCH,
                f"pixel data is truncated: {actual} bytes where Rows x Columns x frames says "
                f"{expected}",
            )
        return
    if not encapsulated:
        raise Rejected(
            DATASET_DOES_NOT_MATCH,
            f"pixel data is not encapsulated although transfer syntax {transfer_syntax} is "
            "compressed",
        )
    try:
        fragments = _count_fragments(ds.PixelData)
    except ValueError as exc:
        reason = f"compressed pixel data is malformed: {exc}"
        raise Rejected(DATASET_DOES_NOT_MATCH, reason) from exc
    if fragments < frames:  # a fragment never holds more than one frame (PS3.5 A.4)
        raise Rejected(
            DATASET_DOES_NOT_MATCH,
            f"compressed pixel data is truncated: {fragments} fragment(s) for {frames} frame(s)",
        )


def _count_fragments(data: bytes) -> int:
    """Fragments after the Basic Offset Table; ValueError unless every item is complete."""
    offset, items = 0, 0
    while offset < len(data):
        if offset + 8 > len(data):
            raise ValueError(f"an item header is cut short at byte {offset}")
        group, element, length = struct.unpack_from("<HHL", data, offset)
        if (group, element) != (0xFFFE, 0xE000):
            raise ValueError(f"({group:04X},{element:04X}) at byte {offset} is not an item")
        if offset + 8 + length > len(data):
            left = len(data) - offset - 8
            raise ValueError(f"the item at byte {offset} declares {length} bytes, {left} follow")
        offset += 8 + length
        items += 1
    if items == 0:
        raise ValueError("no Basic Offset Table item")
    return items - 1


# A-ASSOCIATE-RJ (PS3.8 9.3.4): rejected-permanent, by the service user, with the reason
REJECTED_PERMANENT = 0x01
SERVICE_USER = 0x01
CALLING_AE_NOT_RECOGNISED = 0x03
CALLED_AE_NOT_RECOGNISED = 0x07


class Receiver:
    """Storage SCP bound to a store and a catalogue.

    ``allowed``: the calling AEs (and hosts) that may associate; empty accepts any calling AE.
    ``tls``: a server TLS context; when given the receiver accepts TLS connections only.
    """

    def __init__(
        self,
        store: ObjectStore,
        catalogue: Catalogue,
        ae_title: str,
        *,
        allowed: tuple[AllowedAE, ...] = (),
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.store = store
        self.catalogue = catalogue
        self.ae_title = ae_title
        self.access = AccessList(allowed)
        self.tls = tls
        self.stats = ReceiveStats()
        self._server: ThreadedAssociationServer | None = None

    @classmethod
    def from_settings(
        cls, store: ObjectStore, catalogue: Catalogue, settings: Settings
    ) -> Receiver:
        """The receiver as configured: AE title, allowed callers (with the PACS) and TLS."""
        return cls(
            store,
            catalogue,
            settings.ae_title,
            allowed=allowed_callers(settings),
            tls=receiver_context(settings),
        )

    def check_association(self, event: evt.Event) -> None:
        """EVT_REQUESTED handler: reject at association time a called AE title other than ours,
        and a calling AE (or its host) that is not allowed; log each rejection."""
        assoc = event.assoc
        try:
            calling, peer, refusal = self._refusal(assoc)
        except Exception:  # fail closed: a check that cannot run refuses
            log.exception("could not check an association request; rejected it")
            calling, peer = "?", "?"
            refusal = ("the request could not be checked", CALLING_AE_NOT_RECOGNISED)
        if refusal is None:
            return
        reason, diagnostic = refusal
        log.warning("rejected association from AE %r at %s: %s", calling, peer, reason)
        self.stats.add("refused_associations")
        # as pynetdicom's own ACSE check does: A-ASSOCIATE-RJ, then end the association thread
        assoc.acse.send_reject(REJECTED_PERMANENT, SERVICE_USER, diagnostic)
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()

    def _refusal(self, assoc: Any) -> tuple[str, str, tuple[str, int] | None]:
        """(calling AE title, peer address, None or (why refused, A-ASSOCIATE-RJ reason))."""
        request = assoc.requestor.primitive
        if request is None:
            raise ValueError("no A-ASSOCIATE request")
        called = str(request.called_ae_title).strip()
        calling = str(request.calling_ae_title).strip()
        peer = str(assoc.requestor.address)
        if called != self.ae_title:
            why = f"called AE title {called!r} is not this node's ({self.ae_title})"
            return calling, peer, (why, CALLED_AE_NOT_RECOGNISED)
        refusal = self.access.refusal(calling, peer)
        return calling, peer, None if refusal is None else (refusal, CALLING_AE_NOT_RECOGNISED)

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
            _check_complete(ds)
            record = describe_instance(ds, transfer_syntax, len(raw))
            requested = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "")
            if requested and requested != record.sop_instance_uid:
                raise Rejected(
                    DATASET_DOES_NOT_MATCH,
                    "SOPInstanceUID in the data set differs from the C-STORE request",
                )
            # else any data set could be stored through an accepted CT or MR context
            requested = str(getattr(event.request, "AffectedSOPClassUID", "") or "")
            if requested and requested != record.sop_class_uid:
                raise Rejected(
                    DATASET_DOES_NOT_MATCH,
                    f"SOPClassUID {record.sop_class_uid} in the data set differs from the "
                    f"C-STORE request ({requested})",
                )
        except Rejected as rej:
            return self._reject(raw, rej)
        return self._keep(raw, record)

    def accept(self, raw: bytes) -> int:
        """Take one instance that came by another route than C-STORE (a WADO-RS part), as a
        DICOM Part 10 file: the same checks, durable store, catalogue and quarantine as
        ``handle_store``. Returns the status a C-STORE would have been answered; never raises.

        Only the storage SOP classes the receiver negotiates are taken; any other (an SR, a
        presentation state) is answered 0x0122 and neither stored nor quarantined, as a C-STORE
        of it would have been refused at presentation-context negotiation.
        """
        try:
            try:
                ds = pydicom.dcmread(io.BytesIO(raw))
                transfer_syntax = str(ds.file_meta.TransferSyntaxUID)
            except Exception as exc:  # pydicom raises many types on corrupt data
                raise Rejected(CANNOT_UNDERSTAND, f"the data set cannot be decoded: {exc}") from exc
            _check_complete(ds)
            record = describe_instance(ds, transfer_syntax, len(raw))
        except Rejected as rej:
            return self._reject(raw, rej)
        if record.sop_class_uid not in STORAGE_CLASSES:
            log.info("not taken: SOP class %s is not one this node triages", record.sop_class_uid)
            return SOP_CLASS_NOT_SUPPORTED
        return self._keep(raw, record)

    def _reject(self, raw: bytes, rej: Rejected) -> int:
        self._quarantine(raw, rej.reason)
        self.stats.add("rejected")
        log.warning("rejected an instance (status 0x%04X): %s", rej.status, rej.reason)
        return rej.status

    def _keep(self, raw: bytes, record: InstanceRecord) -> int:
        """Store durably, then catalogue; success only when both are done."""
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
        # check_association decides (hosts too); pynetdicom's own title check backs it up
        ae.require_calling_aet = self.access.ae_titles
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
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self.check_association),
            (evt.EVT_C_STORE, self.handle_store),
        ]
        try:
            server = ae.start_server(
                (host, port), block=False, ssl_context=self.tls, evt_handlers=handlers
            )
            assert server is not None
        except OSError as exc:
            raise StorageError(
                f"cannot listen on {host}:{port} ({exc.strerror}): is another receiver running? "
                "Set TRIAGE_PORT to a free port"
            ) from exc
        self._server = server
        log.info(
            "receiver %s listening on %s:%d (%s; calling AEs: %s)",
            self.ae_title,
            host,
            server.server_address[1],
            "TLS only" if self.tls is not None else "plain TCP",
            ", ".join(str(e) for e in self.access.entries) or "any",
        )
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
