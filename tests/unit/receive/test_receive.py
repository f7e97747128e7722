"""The Storage SCP against real peers: pynetdicom associations and dcmtk's storescu.

Every test starts its own receiver on a free port of 127.0.0.1, with its own store and catalogue,
and checks what the sender was told (DIMSE status), what is in the store (bytes), what is in the
catalogue, and that the receiver still accepts a good instance afterwards.
"""

from __future__ import annotations

import copy
import io
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
import support.scu as scu
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dsutils import encode
from support.factories import phantom_ct_series
from support.paths import SHARED_DATA

from triage.catalogue import Catalogue, InstanceRecord
from triage.dimse import CANNOT_UNDERSTAND, DATASET_DOES_NOT_MATCH, OUT_OF_RESOURCES, SUCCESS
from triage.errors import StorageError
from triage.receive.receiver import Receiver
from triage.store import LocalStore
from triage.synthetic.series import write_series

STORESCU = shutil.which("storescu")
needs_storescu = pytest.mark.skipif(STORESCU is None, reason="dcmtk storescu is not installed")
CALLING_AE = "MODALITY"
PRIVATE_STORAGE_CLASS = "1.2.826.0.1.3680043.8.498.1.1"  # no standard storage class
SLICES = 20


# -- data -------------------------------------------------------------------------------------


def data_keys(receiver: Receiver) -> list[str]:
    """What the receiver stored (instances and quarantine), without its running marker."""
    return [*receiver.store.keys("raw/"), *receiver.store.keys("quarantine/")]


def make_series(seed: int = 0, slices: int = SLICES) -> list[Dataset]:
    return phantom_ct_series("test_receive", seed, (64, 64, slices), (3.5, 3.5, 5.0))


@pytest.fixture(scope="module")
def series() -> list[Dataset]:
    """One 64x64x20 CT series (read-only: tests copy before changing an instance)."""
    return make_series(0)


@pytest.fixture(scope="module")
def other_series() -> list[Dataset]:
    return make_series(1, slices=4)


@pytest.fixture
def series_files(tmp_path: Path, series: list[Dataset]) -> list[Path]:
    return write_series(series, tmp_path / "files")


def good_instance(seed: int = 99) -> Dataset:
    """A fresh valid instance (its own study), to prove the receiver still works."""
    return make_series(seed, slices=1)[0]


# -- peers ------------------------------------------------------------------------------------


def stop_later(stopping: list[threading.Thread], rx: Receiver, catalogue: Catalogue) -> None:
    def stop() -> None:
        rx.stop()
        catalogue.close()

    thread = threading.Thread(target=stop)
    thread.start()
    stopping.append(thread)


@pytest.fixture
def receiver(tmp_path: Path, stopper: list[threading.Thread]) -> Iterator[Receiver]:
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'catalogue.db'}")
    rx = Receiver(LocalStore(tmp_path / "store"), catalogue, "TRIAGE")
    rx.start("127.0.0.1", 0)
    yield rx
    stop_later(stopper, rx, catalogue)


def associate(
    port: int,
    called: str = "TRIAGE",
    sop_classes: Sequence[str] = (CTImageStorage,),
    syntaxes: Sequence[str] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian),
) -> Association:
    ae = AE(ae_title=CALLING_AE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
    for sop_class in sop_classes:
        ae.add_requested_context(sop_class, list(syntaxes))
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if assoc.is_established:
        # pynetdicom leaves Nagle on: each C-STORE then waits for a delayed ACK (about 40 ms)
        assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return assoc


def send(port: int, datasets: Sequence[Dataset], **kwargs: object) -> list[int]:
    """C-STORE every data set on one association; the DIMSE status of each."""
    assoc = associate(port, **kwargs)  # type: ignore[arg-type]
    assert assoc.is_established, "the receiver refused the association"
    try:
        statuses = []
        for ds in datasets:
            status = assoc.send_c_store(ds)
            assert "Status" in status, "no C-STORE response"
            statuses.append(int(status.Status))
        return statuses
    finally:
        assoc.release()


def send_raw(
    assoc: Association,
    payload: bytes,
    sop_instance_uid: str,
    sop_class_uid: str = CTImageStorage,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> int:
    """Send a C-STORE whose data set is ``payload`` exactly as given (no encoding, no checks)."""
    status = scu.send_raw(assoc, payload, sop_class_uid, sop_instance_uid, transfer_syntax)
    assert status is not None, "no C-STORE response"
    return status


def encode_explicit_le(ds: Dataset) -> bytes:
    """The data set as explicit VR little endian bytes, without preamble or file meta."""
    data = encode(ds, False, True)
    assert data is not None
    return data


def storescu(
    port: int, files: Sequence[Path], *options: str, called: str = "TRIAGE"
) -> subprocess.CompletedProcess[str]:
    assert STORESCU is not None
    return subprocess.run(
        [STORESCU, *options, "-aet", CALLING_AE, "-aec", called, "127.0.0.1", str(port)]
        + [str(f) for f in files],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TCP_NODELAY": "1"},
        check=False,
    )


# -- checks -----------------------------------------------------------------------------------


def raw_keys(rx: Receiver) -> list[str]:
    return sorted(k for k in rx.store.keys("raw"))


def quarantined(rx: Receiver) -> dict[str, tuple[bytes, str]]:
    """Quarantined data by name: (bytes kept, reason text)."""
    keys = sorted(rx.store.keys("quarantine"))
    out = {}
    for key in keys:
        if key.endswith(".dcm"):
            reason_key = key[: -len(".dcm")] + ".reason.txt"
            assert reason_key in keys, f"{key} has no reason file"
            out[key] = (rx.store.get(key), rx.store.get(reason_key).decode())
    assert len(keys) == 2 * len(out)
    return out


def assert_stored_once(rx: Receiver, datasets: Sequence[Dataset]) -> None:
    """Every instance is in the store once, parses back, and is in the catalogue."""
    keys = raw_keys(rx)
    assert len(keys) == len(datasets)
    by_sop = {}
    for key in keys:
        stored = pydicom.dcmread(io.BytesIO(rx.store.get(key)))
        assert stored.file_meta.MediaStorageSOPInstanceUID == stored.SOPInstanceUID
        uids = (stored.StudyInstanceUID, stored.SeriesInstanceUID, stored.SOPInstanceUID)
        assert key == "raw/{}/{}/{}.dcm".format(*uids)
        by_sop[str(stored.SOPInstanceUID)] = stored
    for ds in datasets:
        stored = by_sop[str(ds.SOPInstanceUID)]
        assert stored.PixelData == ds.PixelData
        assert rx.catalogue.has_instance(str(ds.SOPInstanceUID))
    assert rx.catalogue.counts()["instances"] == len(datasets)


def assert_still_accepts(rx: Receiver, seed: int = 99) -> None:
    ds = good_instance(seed)
    assert send(rx.port, [ds]) == [SUCCESS]
    assert rx.catalogue.has_instance(str(ds.SOPInstanceUID))
    assert rx.store.exists(
        f"raw/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
    )


# -- good instances ---------------------------------------------------------------------------


def test_pynetdicom_series_is_stored_and_catalogued(
    receiver: Receiver, series: list[Dataset]
) -> None:
    assert send(receiver.port, series) == [SUCCESS] * SLICES
    assert_stored_once(receiver, series)
    assert receiver.stats.stored == SLICES
    assert (receiver.stats.duplicates, receiver.stats.rejected, receiver.stats.failed) == (0, 0, 0)
    [summary] = receiver.catalogue.series_of(str(series[0].StudyInstanceUID))
    assert summary.modality == "CT"
    assert summary.body_part == "HEAD"
    assert summary.series_number == "2"
    assert summary.image_types == ("ORIGINAL\\PRIMARY\\AXIAL",)
    assert len(summary.keys) == SLICES
    [row] = receiver.catalogue.worklist()
    assert row.accession_number == "ACC0"
    assert row.instances == SLICES
    assert list(receiver.store.keys("quarantine")) == []


def test_stored_file_is_part10_with_the_negotiated_transfer_syntax(
    receiver: Receiver, series: list[Dataset]
) -> None:
    assert send(receiver.port, series[:1], syntaxes=[ImplicitVRLittleEndian]) == [SUCCESS]
    [key] = raw_keys(receiver)
    data = receiver.store.get(key)
    assert data[128:132] == b"DICM"
    stored = pydicom.dcmread(io.BytesIO(data))
    assert stored.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert np.array_equal(stored.pixel_array, series[0].pixel_array)
    assert not [p for p in receiver.store.root.rglob(".incoming-*")]


def test_verification_echo_succeeds(receiver: Receiver) -> None:
    assoc = associate(receiver.port, sop_classes=["1.2.840.10008.1.1"])
    assert assoc.is_established
    try:
        assert int(assoc.send_c_echo().Status) == SUCCESS
    finally:
        assoc.release()


@pytest.mark.integration
@needs_storescu
def test_storescu_series_is_stored_and_catalogued(
    receiver: Receiver, series: list[Dataset], series_files: list[Path]
) -> None:
    done = storescu(receiver.port, series_files)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_stored_once(receiver, series)
    assert receiver.stats.stored == SLICES


def test_same_instances_twice_are_stored_once(receiver: Receiver, series: list[Dataset]) -> None:
    assert send(receiver.port, series) == [SUCCESS] * SLICES
    first = {k: receiver.store.get(k) for k in raw_keys(receiver)}
    assert send(receiver.port, series) == [SUCCESS] * SLICES
    assert receiver.stats.stored == SLICES
    assert receiver.stats.duplicates == SLICES
    assert {k: receiver.store.get(k) for k in raw_keys(receiver)} == first
    assert_stored_once(receiver, series)


@pytest.mark.integration
@needs_storescu
def test_storescu_sending_the_same_files_twice_stores_once(
    receiver: Receiver, series: list[Dataset], series_files: list[Path]
) -> None:
    for _ in range(2):
        done = storescu(receiver.port, series_files)
        assert done.returncode == 0, done.stdout + done.stderr
    assert receiver.stats.stored == SLICES
    assert receiver.stats.duplicates == SLICES
    assert_stored_once(receiver, series)


def test_the_same_instances_on_parallel_associations_are_stored_once(
    receiver: Receiver, series: list[Dataset], other_series: list[Dataset]
) -> None:
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def sender(datasets: list[Dataset]) -> None:
        try:
            results.append(send(receiver.port, datasets))
        except BaseException as exc:
            errors.append(exc)

    work = [series, series, list(reversed(series)), other_series]
    threads = [threading.Thread(target=sender, args=(w,)) for w in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert all(set(r) == {SUCCESS} for r in results) and len(results) == 4
    assert receiver.stats.stored == SLICES + len(other_series)
    assert receiver.stats.duplicates == 2 * SLICES
    assert_stored_once(receiver, [*series, *other_series])


@pytest.mark.integration
@needs_storescu
def test_storescu_real_transfer_syntaxes_are_kept_as_sent(receiver: Receiver) -> None:
    folder = SHARED_DATA / "transfer_syntaxes_siemens"
    if not folder.is_dir():
        pytest.skip(f"real DICOM data not found at {folder}")
    # storescu proposes uncompressed syntaxes by default; name the compressed one per file
    batches = [("-x=", "123"), ("-xr", "4"), ("-xs", "56"), ("-xt", "78"), ("-xv", "9")]
    for option, names in batches:
        done = storescu(receiver.port, [folder / f"{n}.dcm" for n in names], option)
        assert done.returncode == 0, done.stdout + done.stderr
    assert receiver.stats.stored == 9
    for n in range(1, 10):
        original = pydicom.dcmread(folder / f"{n}.dcm")
        key = (
            f"raw/{original.StudyInstanceUID}/{original.SeriesInstanceUID}/"
            f"{original.SOPInstanceUID}.dcm"
        )
        stored = pydicom.dcmread(io.BytesIO(receiver.store.get(key)))
        syntax = original.file_meta.TransferSyntaxUID
        if syntax.is_compressed:  # sent as is
            assert stored.file_meta.TransferSyntaxUID == syntax
            assert stored.PixelData == original.PixelData
        assert np.array_equal(stored.pixel_array, original.pixel_array), f"{n}.dcm"
    [summary] = receiver.catalogue.series_of(str(original.StudyInstanceUID))
    assert summary.modality == "MR"
    assert len(summary.keys) == 9


# -- bad input: refused with a status, kept in quarantine, receiver goes on --------------------


def test_truncated_pixel_data_is_refused_and_quarantined(
    receiver: Receiver, series: list[Dataset]
) -> None:
    ds = copy.deepcopy(series[0])
    ds.PixelData = ds.PixelData[:-256]
    assert send(receiver.port, [ds]) == [DATASET_DOES_NOT_MATCH]
    [(data, reason)] = quarantined(receiver).values()
    assert "truncated" in reason
    assert str(len(ds.PixelData)) in reason and str(64 * 64 * 2) in reason
    kept = pydicom.dcmread(io.BytesIO(data))
    assert kept.SOPInstanceUID == ds.SOPInstanceUID
    assert kept.PixelData == ds.PixelData
    assert raw_keys(receiver) == []
    assert receiver.catalogue.counts()["instances"] == 0
    assert receiver.stats.rejected == 1
    assert_still_accepts(receiver)


def test_real_truncated_file_is_refused_and_quarantined(receiver: Receiver) -> None:
    path = SHARED_DATA / "pydicom_oddities" / "MR_truncated.dcm"
    if not path.is_file():
        pytest.skip(f"real DICOM data not found at {path}")
    ds = pydicom.dcmread(path)
    assert send(receiver.port, [ds], sop_classes=[MRImageStorage, CTImageStorage]) == [
        DATASET_DOES_NOT_MATCH
    ]
    [(data, reason)] = quarantined(receiver).values()
    assert "truncated" in reason
    assert pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID == ds.SOPInstanceUID
    assert receiver.catalogue.counts()["instances"] == 0
    assert_still_accepts(receiver)


def test_missing_study_uid_is_refused_and_quarantined(
    receiver: Receiver, series: list[Dataset]
) -> None:
    ds = copy.deepcopy(series[1])
    del ds.StudyInstanceUID
    assert send(receiver.port, [ds]) == [DATASET_DOES_NOT_MATCH]
    [(data, reason)] = quarantined(receiver).values()
    assert "StudyInstanceUID" in reason
    assert pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID == ds.SOPInstanceUID
    assert receiver.catalogue.counts()["instances"] == 0
    assert_still_accepts(receiver)


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_invalid_uid_is_refused_and_quarantined(receiver: Receiver, series: list[Dataset]) -> None:
    ds = copy.deepcopy(series[2])
    ds.SeriesInstanceUID = "1.2.abc..3"
    assert send(receiver.port, [ds]) == [DATASET_DOES_NOT_MATCH]
    [(_data, reason)] = quarantined(receiver).values()
    assert "SeriesInstanceUID" in reason
    assert receiver.catalogue.counts()["instances"] == 0
    assert_still_accepts(receiver)


def test_sop_instance_uid_differing_from_the_request_is_refused(
    receiver: Receiver, series: list[Dataset]
) -> None:
    assoc = associate(receiver.port)
    assert assoc.is_established
    try:
        status = send_raw(assoc, encode_explicit_le(series[3]), sop_instance_uid=generate_uid())
    finally:
        assoc.release()
    assert status == DATASET_DOES_NOT_MATCH
    [(_data, reason)] = quarantined(receiver).values()
    assert "differs" in reason
    assert receiver.catalogue.counts()["instances"] == 0
    assert_still_accepts(receiver)


@pytest.mark.filterwarnings("ignore:Expected explicit VR")
def test_non_dicom_payload_is_refused_and_quarantined(receiver: Receiver) -> None:
    garbage = b"garbage, not a DICOM data set \x00\xff\x10" * 40
    assoc = associate(receiver.port)
    assert assoc.is_established
    try:
        status = send_raw(assoc, garbage, sop_instance_uid=generate_uid())
        assert status in (CANNOT_UNDERSTAND, DATASET_DOES_NOT_MATCH)
        # the same association still works
        assert int(assoc.send_c_store(good_instance(7)).Status) == SUCCESS
    finally:
        assoc.release()
    [(data, reason)] = quarantined(receiver).values()
    assert data.endswith(garbage)
    assert reason
    assert receiver.stats.rejected == 1
    assert receiver.stats.stored == 1
    assert_still_accepts(receiver)


def private_class_instance(ds: Dataset) -> Dataset:
    """The instance relabelled as a vendor's private storage class, which the receiver does
    not accept unless TRIAGE_ACCEPT_SOP_CLASSES names it."""
    private = copy.deepcopy(ds)
    private.SOPClassUID = PRIVATE_STORAGE_CLASS
    private.file_meta.MediaStorageSOPClassUID = PRIVATE_STORAGE_CLASS
    return private


def test_unsupported_sop_class_is_refused_by_pynetdicom_peer(
    receiver: Receiver, series: list[Dataset]
) -> None:
    private = private_class_instance(series[0])
    assoc = associate(receiver.port, sop_classes=[PRIVATE_STORAGE_CLASS, CTImageStorage])
    assert assoc.is_established
    try:
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        assert PRIVATE_STORAGE_CLASS not in accepted
        assert CTImageStorage in accepted
        with pytest.raises(ValueError, match="presentation context"):
            assoc.send_c_store(private)
    finally:
        assoc.release()
    assert data_keys(receiver) == []
    assert_still_accepts(receiver)


@pytest.mark.integration
@needs_storescu
def test_unsupported_sop_class_is_refused_by_storescu(
    receiver: Receiver, series: list[Dataset], tmp_path: Path
) -> None:
    [path] = write_series([private_class_instance(series[0])], tmp_path / "private")
    done = storescu(receiver.port, [path])
    assert done.returncode != 0
    assert "presentation context" in (done.stdout + done.stderr).lower()
    assert data_keys(receiver) == []
    assert receiver.catalogue.counts()["instances"] == 0
    assert_still_accepts(receiver)


def test_wrong_called_ae_title_is_rejected(receiver: Receiver) -> None:
    assoc = associate(receiver.port, called="NOT_TRIAGE")
    assert not assoc.is_established
    assert assoc.is_rejected
    assert data_keys(receiver) == []
    assert_still_accepts(receiver)


@pytest.mark.integration
@needs_storescu
def test_wrong_called_ae_title_is_rejected_for_storescu(
    receiver: Receiver, series_files: list[Path]
) -> None:
    done = storescu(receiver.port, series_files[:2], called="NOT_TRIAGE")
    assert done.returncode != 0
    assert "Called AE Title Not Recognized" in done.stdout + done.stderr
    assert data_keys(receiver) == []
    assert_still_accepts(receiver)


def test_storage_failure_answers_a700_and_catalogues_nothing(
    receiver: Receiver, series: list[Dataset], tmp_path: Path
) -> None:
    good_store = receiver.store
    broken_root = tmp_path / "broken"
    broken = LocalStore(broken_root)
    broken_root.rmdir()
    broken_root.write_bytes(b"the store's folder is now a file")
    receiver.store = broken
    assert send(receiver.port, series[:2]) == [OUT_OF_RESOURCES] * 2
    assert receiver.stats.failed == 2
    assert receiver.stats.stored == 0
    assert receiver.catalogue.counts()["instances"] == 0
    assert not receiver.catalogue.has_instance(str(series[0].SOPInstanceUID))
    # the operator fixes the storage; the sender's retry then succeeds
    receiver.store = good_store
    assert send(receiver.port, series[:2]) == [SUCCESS] * 2
    assert_stored_once(receiver, series[:2])
    assert_still_accepts(receiver)


class FailingCatalogue:
    """A catalogue whose writes fail the first ``failures`` times (a locked or full database)."""

    def __init__(self, real: Catalogue, failures: int) -> None:
        self.real = real
        self.failures = failures

    def has_instance(self, sop_instance_uid: str) -> bool:
        return self.real.has_instance(sop_instance_uid)

    def record_instance(self, rec: InstanceRecord) -> bool:
        return self.record_instances([rec])[0]

    def record_instances(self, recs: list[InstanceRecord]) -> list[bool]:
        if self.failures > 0:
            self.failures -= 1
            raise StorageError("catalogue write failed: database or disk is full")
        return self.real.record_instances(recs)


def test_catalogue_failure_answers_a700_and_the_retry_is_catalogued(
    receiver: Receiver, series: list[Dataset]
) -> None:
    real = receiver.catalogue
    receiver.catalogue = FailingCatalogue(real, failures=1)  # type: ignore[assignment]
    assert send(receiver.port, series[:1]) == [OUT_OF_RESOURCES]
    assert real.counts()["instances"] == 0
    assert send(receiver.port, series[:1]) == [SUCCESS]  # the sender retries
    receiver.catalogue = real
    assert receiver.stats.failed == 1
    assert receiver.stats.stored == 1
    assert_stored_once(receiver, series[:1])


def test_a_mix_of_good_and_bad_on_one_association(
    receiver: Receiver, series: list[Dataset]
) -> None:
    truncated = copy.deepcopy(series[4])
    truncated.PixelData = truncated.PixelData[:100]
    no_study = copy.deepcopy(series[5])
    del no_study.StudyInstanceUID
    statuses = send(receiver.port, [series[0], truncated, series[1], no_study, series[2]])
    assert statuses == [SUCCESS, DATASET_DOES_NOT_MATCH, SUCCESS, DATASET_DOES_NOT_MATCH, SUCCESS]
    assert_stored_once(receiver, series[:3])
    assert len(quarantined(receiver)) == 2
    assert (receiver.stats.stored, receiver.stats.rejected) == (3, 2)


def test_port_in_use_is_a_clear_error(
    receiver: Receiver, tmp_path: Path, stopper: list[threading.Thread]
) -> None:
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'other.db'}")
    other = Receiver(LocalStore(tmp_path / "other"), catalogue, "TRIAGE")
    try:
        with pytest.raises(StorageError, match="TRIAGE_PORT"):
            other.start("127.0.0.1", receiver.port)
    finally:
        stop_later(stopper, other, catalogue)
    assert_still_accepts(receiver)


def test_port_before_start_is_an_error(tmp_path: Path) -> None:
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        rx = Receiver(LocalStore(tmp_path / "s"), catalogue, "TRIAGE")
        with pytest.raises(RuntimeError, match="not started"):
            _ = rx.port
        rx.stop()  # stopping a receiver that never started is harmless
    finally:
        catalogue.close()
