"""After an unclean stop the catalogue is put back in line with the store."""

from __future__ import annotations

import io
from pathlib import Path

from support.factories import phantom_ct_series

from triage.catalogue import Catalogue
from triage.receive.receiver import RUNNING_MARKER, Receiver
from triage.store import LocalStore, instance_key


def _instances(count: int) -> list[bytes]:
    out = []
    for ds in phantom_ct_series(
        "test_recovery",
        5,
        (32, 32, count),
        study_instance_uid="1.2.826.0.1.1",
        series_instance_uid="1.2.826.0.1.1.2",
    ):
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


def test_unclean_stop_catalogues_stored_instances_without_rows(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'c.db'}")
    import pydicom

    for data in _instances(4):  # stored (fsynced) but the catalogue rows were lost
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        store.put(instance_key(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID), data)
    store.put("raw/1.2.3/1.2.3.4/junk.dcm", b"not dicom")  # reported, left alone
    store.put(RUNNING_MARKER, b"running")  # the last run never stopped cleanly

    receiver = Receiver(store, catalogue, "TRIAGE")
    receiver.start("127.0.0.1", 0)
    try:
        assert catalogue.counts()["instances"] == 4
        assert catalogue.quiet_studies(0) == ["1.2.826.0.1.1"]  # it will be triaged
        assert store.exists("raw/1.2.3/1.2.3.4/junk.dcm")
    finally:
        receiver.stop()
    assert not store.exists(RUNNING_MARKER)


def test_clean_restart_does_not_rescan(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'c.db'}")
    receiver = Receiver(store, catalogue, "TRIAGE")
    receiver.start("127.0.0.1", 0)
    receiver.stop()
    import pydicom

    data = _instances(3)[0]
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    store.put(instance_key(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID), data)
    again = Receiver(store, catalogue, "TRIAGE")
    again.start("127.0.0.1", 0)
    again.stop()
    assert catalogue.counts()["instances"] == 0  # a clean stop left nothing to reconcile
