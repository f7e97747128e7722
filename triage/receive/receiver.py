"""The DICOM Storage SCP: receive instances, store them durably, catalogue them, then answer.

Rule: success (0x0000) is answered only after the instance is in the object store (fsynced) and
in the catalogue. Any storage failure answers 0xA700 so the sender keeps the data and retries.
Data that arrived but cannot be used is kept in ``quarantine/`` with the reason, never dropped.
It takes every storage SOP class that TRIAGE_ACCEPT_SOP_CLASSES names (``sop_classes``), so that
a PACS forwarding a whole study succeeds; only CT and MR images are triage input.
"""

from __future__ import annotations

import io
import logging
import ssl
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
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
from triage.receive.access import AccessList, allowed_callers, reject_if_refused
from triage.receive.announced import announced_counts
from triage.receive.checks import Rejected, check_complete, check_pixel_data
from triage.receive.commit import GroupCommit
from triage.receive.counters import ReceiveStats
from triage.receive.network import start_server
from triage.receive.part10 import file_header
from triage.receive.sop_classes import (
    IMAGE_TRANSFER_SYNTAXES,
    STORAGE_CLASSES,
    VERIFICATION,
    accepted_classes,
    is_analysed,
    name_of,
    register_storage,
    transfer_syntaxes_for,
)
from triage.receive.tls import receiver_context
from triage.store import ObjectStore, instance_key

log = logging.getLogger(__name__)

ACCEPTED_TRANSFER_SYNTAXES = IMAGE_TRANSFER_SYNTAXES  # for image classes; see sop_classes

RUNNING_MARKER = "state/receiver-running"


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
    check_pixel_data(ds, transfer_syntax)
    kernel = frame_value(ds, "CTReconstructionSequence", "ConvolutionKernel")
    counts = announced_counts(ds)
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
            triage_input=is_analysed(uids["SOPClassUID"]),
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
            announced_series_instances=counts.series,
            announced_study_instances=counts.study,
        )
    except StorageError as exc:
        raise Rejected(DATASET_DOES_NOT_MATCH, str(exc)) from exc
    except Exception as exc:
        raise Rejected(CANNOT_UNDERSTAND, f"the header cannot be decoded: {exc}") from exc


class Receiver:
    """Storage SCP bound to a store and a catalogue.

    ``allowed``: the calling AEs (and hosts) that may associate; empty accepts any calling AE.
    ``tls``: a server TLS context; when given the receiver accepts TLS connections only.
    ``accepted``: the storage SOP class UIDs it takes (every standard one unless told).
    """

    def __init__(
        self,
        store: ObjectStore,
        catalogue: Catalogue,
        ae_title: str,
        *,
        allowed: tuple[AllowedAE, ...] = (),
        tls: ssl.SSLContext | None = None,
        accepted: Sequence[str] = STORAGE_CLASSES,
    ) -> None:
        self.store = store
        self.catalogue = catalogue
        self.ae_title = ae_title
        self.access = AccessList(allowed)
        self.tls = tls
        self.accepted = tuple(accepted)
        register_storage(self.accepted)
        self._accepted = frozenset(self.accepted)
        self.stats = ReceiveStats()
        self._commits = GroupCommit()
        self._server: ThreadedAssociationServer | None = None

    @classmethod
    def from_settings(
        cls, store: ObjectStore, catalogue: Catalogue, settings: Settings
    ) -> Receiver:
        """The receiver as configured: AE title, allowed callers (with the PACS), TLS and the
        SOP classes it accepts."""
        return cls(
            store,
            catalogue,
            settings.ae_title,
            allowed=allowed_callers(settings),
            tls=receiver_context(settings),
            accepted=accepted_classes(settings.accept_sop_classes),
        )

    def check_association(self, event: evt.Event) -> None:
        """EVT_REQUESTED handler: reject at association time a called AE title other than ours,
        and a calling AE (or its host) that is not allowed; log each rejection."""
        reject_if_refused(
            event.assoc,
            self.ae_title,
            self.access,
            on_refused=lambda: self.stats.add("refused_associations"),
        )

    def handle_store(self, event: evt.Event) -> int:
        """EVT_C_STORE handler: returns a status, never raises."""
        try:
            request = cast(C_STORE, event.request)  # the bytes as received, as a Part 10 file
            raw = (
                file_header(
                    str(request.AffectedSOPClassUID or ""),
                    str(request.AffectedSOPInstanceUID or ""),
                    str(event.context.transfer_syntax),
                )
                + cast(io.BytesIO, request.DataSet).getvalue()
            )
        except Exception:
            log.exception("could not read the received data set")
            self.stats.add("failed", CANNOT_UNDERSTAND)
            return CANNOT_UNDERSTAND
        transfer_syntax = str(event.context.transfer_syntax)
        try:
            try:
                ds = event.dataset
            except Exception as exc:
                raise Rejected(CANNOT_UNDERSTAND, f"the data set cannot be decoded: {exc}") from exc
            check_complete(ds)
            record = describe_instance(ds, transfer_syntax, len(raw))
            requested = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "")
            if requested and requested != record.sop_instance_uid:
                raise Rejected(
                    DATASET_DOES_NOT_MATCH,
                    "SOPInstanceUID in the data set differs from the C-STORE request",
                )
            # else any data set could be stored through the context of an accepted class
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

        Only the SOP classes the receiver accepts (``accepted``) are taken; any other is
        answered 0x0122 and neither stored nor quarantined, as a C-STORE of it would have been
        refused at presentation-context negotiation. The instance is kept in the transfer
        syntax it came in, as a C-STORE one is.
        """
        try:
            try:
                ds = pydicom.dcmread(io.BytesIO(raw))
                transfer_syntax = str(ds.file_meta.TransferSyntaxUID)
            except Exception as exc:  # pydicom raises many types on corrupt data
                raise Rejected(CANNOT_UNDERSTAND, f"the data set cannot be decoded: {exc}") from exc
            check_complete(ds)
            record = describe_instance(ds, transfer_syntax, len(raw))
        except Rejected as rej:
            return self._reject(raw, rej)
        if record.sop_class_uid not in self._accepted:
            log.info(
                "not taken: SOP class %s is not accepted (TRIAGE_ACCEPT_SOP_CLASSES)",
                name_of(record.sop_class_uid),
            )
            return SOP_CLASS_NOT_SUPPORTED
        return self._keep(raw, record)

    def _reject(self, raw: bytes, rej: Rejected) -> int:
        self._quarantine(raw, rej.reason)
        self.stats.add("rejected", rej.status)
        log.warning("rejected an instance (status 0x%04X): %s", rej.status, rej.reason)
        return rej.status

    def _keep(self, raw: bytes, record: InstanceRecord) -> int:
        """Store durably, then catalogue (together with what other associations receive at
        the same moment: `triage.receive.commit`); success only when both are done."""
        try:
            # no look-up first: a duplicate lands on the same key, and the catalogue says so
            new = self._commits.keep(self.store, self.catalogue, raw, record)
        except StorageError as exc:
            self.stats.add("failed", OUT_OF_RESOURCES)
            log.error("could not store an instance, answered 0xA700 so the sender retries: %s", exc)
            return OUT_OF_RESOURCES
        except Exception:
            self.stats.add("failed", OUT_OF_RESOURCES)
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
        for sop_class in self.accepted:
            ae.add_supported_context(sop_class, list(transfer_syntaxes_for(sop_class)))
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
            server = start_server(ae, (host, port), ssl_context=self.tls, evt_handlers=handlers)
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
