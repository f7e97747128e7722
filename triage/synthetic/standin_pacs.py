"""A built-in stand-in PACS for the demo: a Storage SCP that keeps every result it receives
(the SRs, and the key object selection and segmentation that come with a positive finding).

It is not a PACS: no query, no worklist. It exists so the demo shows delivery working on a
machine with no PACS. Point TRIAGE_PACS at a real one (Orthanc, ...) to use that instead.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from pydicom.uid import (
    BasicTextSRStorage,
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    EnhancedSRStorage,
    KeyObjectSelectionDocumentStorage,
    SegmentationStorage,
)
from pynetdicom import AE, evt
from pynetdicom.transport import ThreadedAssociationServer

from triage.dimse import SUCCESS
from triage.store import LocalStore, check_key

SR_CLASSES = (
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    EnhancedSRStorage,
    BasicTextSRStorage,
)
RESULT_CLASSES = (*SR_CLASSES, KeyObjectSelectionDocumentStorage, SegmentationStorage)


class StandInPacs:
    def __init__(self, folder: Path, ae_title: str = "STANDIN_PACS") -> None:
        self.store = LocalStore(folder)
        self.ae_title = ae_title
        self.received: list[str] = []
        self._lock = threading.Lock()
        self._server: ThreadedAssociationServer | None = None

    def _handle(self, event: evt.Event) -> int:
        ds = event.dataset
        key = check_key(f"{ds.StudyInstanceUID}/{ds.SOPInstanceUID}.dcm")
        self.store.put(key, event.encoded_dataset())
        with self._lock:
            self.received.append(key)
        return SUCCESS

    def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        ae = AE(ae_title=self.ae_title)
        for sop_class in RESULT_CLASSES:
            ae.add_supported_context(sop_class)
        handlers: list[Any] = [(evt.EVT_C_STORE, self._handle)]
        server = ae.start_server((host, port), block=False, evt_handlers=handlers)
        assert server is not None
        self._server = server
        return int(server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
