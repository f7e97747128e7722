"""A receiver under test on a free port, stopped in the background, and what it stored."""

from __future__ import annotations

import io
import struct
import threading
from collections.abc import Sequence
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode

from triage.catalogue import Catalogue
from triage.receive.receiver import Receiver
from triage.receive.sop_classes import STORAGE_CLASSES
from triage.store import LocalStore


def open_receiver(folder: Path, accepted: Sequence[str] = STORAGE_CLASSES) -> Receiver:
    """A started receiver (AE title TRIAGE) with its own store and catalogue under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    catalogue = Catalogue(f"sqlite:///{folder / 'catalogue.db'}")
    rx = Receiver(LocalStore(folder / "store"), catalogue, "TRIAGE", accepted=accepted)
    rx.start("127.0.0.1", 0)
    return rx


def stop_later(stopper: list[threading.Thread], rx: Receiver) -> None:
    """Stop it and close its catalogue in the background (pynetdicom's poll loop takes up to
    0.5 s); the ``stopper`` fixture waits for it at the end of the module."""

    def stop() -> None:
        rx.stop()
        rx.catalogue.close()

    thread = threading.Thread(target=stop)
    thread.start()
    stopper.append(thread)


def stored_bytes(rx: Receiver, ds: Dataset) -> bytes:
    """The file the receiver stored for the instance ``ds``."""
    return rx.store.get(f"raw/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm")


def stored(rx: Receiver, ds: Dataset) -> Dataset:
    return pydicom.dcmread(io.BytesIO(stored_bytes(rx, ds)))


def data_set_bytes(part10_file: bytes) -> bytes:
    """What follows the file meta information (its length is in (0002,0000))."""
    assert part10_file[128:132] == b"DICM"
    (meta_length,) = struct.unpack_from("<L", part10_file, 132 + 8)
    return part10_file[132 + 12 + meta_length :]


def as_sent(ds: Dataset) -> bytes:
    """The data set as pynetdicom puts it on the wire, in its own transfer syntax."""
    syntax = ds.file_meta.TransferSyntaxUID
    data = encode(ds, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
    assert data is not None
    return data
