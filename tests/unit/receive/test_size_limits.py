"""Headers that claim absurd sizes are refused before anything allocates memory for them.

The receiver checks what an instance declares (Rows, Columns, NumberOfFrames, SamplesPerPixel,
BitsAllocated) against ``MAX_FRAME_SIDE`` and ``MAX_PIXEL_BYTES`` before anything decodes its
pixels, for native and for compressed (encapsulated) transfer syntaxes; compressed pixel data
must also be complete items with at least one fragment per frame. Each refusal is answered
0xA900 with the reason, the bytes stay in quarantine/, and this process's resident memory (the
receiver runs in it) does not jump.
"""

from __future__ import annotations

import copy
import gc
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    MRImageStorage,
    RLELossless,
)
from pynetdicom.dsutils import encode
from support.factories import phantom_ct_series
from support.scu import associate, send_raw

from triage.catalogue import Catalogue
from triage.dimse import CANNOT_UNDERSTAND, DATASET_DOES_NOT_MATCH, SUCCESS
from triage.limits import MAX_FRAME_SIDE, MAX_PIXEL_BYTES
from triage.receive.receiver import ACCEPTED_TRANSFER_SYNTAXES, Receiver
from triage.store import LocalStore

RSS_GROWTH_LIMIT = 64 * 2**20  # a decode of any absurd header here would take gigabytes
CLASSES = (CTImageStorage, EnhancedCTImageStorage, MRImageStorage, EnhancedMRImageStorage)
CONTEXTS = [(c, ts) for c in CLASSES for ts in ACCEPTED_TRANSFER_SYNTAXES]


@pytest.fixture
def receiver(tmp_path: Path, stopper: list[threading.Thread]) -> Iterator[Receiver]:
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'catalogue.db'}")
    rx = Receiver(LocalStore(tmp_path / "store"), catalogue, "TRIAGE")
    rx.start("127.0.0.1", 0)
    # one good instance first: the first association's own allocations are not counted later
    assert send(rx, [slice_(seed=90)]) == [SUCCESS]
    yield rx

    def stop() -> None:
        rx.stop()
        catalogue.close()

    thread = threading.Thread(target=stop)
    thread.start()
    stopper.append(thread)


def slice_(seed: int = 0) -> Dataset:
    return phantom_ct_series("test_size_limits", seed, (32, 32, 1))[0]


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def send(rx: Receiver, datasets: list[Dataset]) -> list[int]:
    """pynetdicom's own C-STORE of each data set, encoded in its file meta's transfer syntax."""
    assoc = associate(rx.port, CONTEXTS)
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def send_bytes(rx: Receiver, ds: Dataset, body: bytes, transfer_syntax: str) -> int | None:
    assoc = associate(rx.port, CONTEXTS)
    assert assoc.is_established
    try:
        return send_raw(assoc, body, str(ds.SOPClassUID), str(ds.SOPInstanceUID), transfer_syntax)
    finally:
        assoc.release()


def quarantined_reasons(rx: Receiver) -> list[str]:
    keys = sorted(rx.store.keys("quarantine/"))
    data = [k for k in keys if k.endswith(".dcm")]
    reasons = [rx.store.get(k).decode() for k in keys if k.endswith(".reason.txt")]
    assert len(data) == len(reasons) == rx.stats.rejected
    return reasons


def assert_refused(
    rx: Receiver,
    ds: Dataset,
    status: int | None,
    reason_part: str,
    expected: int = DATASET_DOES_NOT_MATCH,
) -> None:
    assert status == expected
    [reason] = quarantined_reasons(rx)
    assert reason_part in reason, reason
    [key] = [k for k in rx.store.keys("quarantine/") if k.endswith(".dcm")]
    kept = pydicom.dcmread(rx.store.path(key), stop_before_pixels=True)
    assert kept.SOPInstanceUID == ds.SOPInstanceUID
    assert not rx.catalogue.has_instance(str(ds.SOPInstanceUID))
    assert send(rx, [slice_(seed=91)]) == [SUCCESS]  # and it goes on


def absurd(
    rows: int,
    columns: int,
    frames: int | None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    pixel_data: bytes = b"\0" * 64,
) -> Dataset:
    """A CT slice (enhanced CT when it has frames) whose header declares this size."""
    ds = copy.deepcopy(slice_())
    ds.Rows, ds.Columns = rows, columns
    if frames is not None:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
        ds.NumberOfFrames = frames
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.PixelData = pixel_data
    if pydicom.uid.UID(transfer_syntax).is_compressed:
        ds.PixelData = encapsulate([pixel_data])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    return ds


FRAME_LIMIT = f"exceed the limit of {MAX_FRAME_SIDE} x {MAX_FRAME_SIDE}"
BUDGET = f"over the limit of {MAX_PIXEL_BYTES} bytes per instance"


@pytest.mark.parametrize(
    ("rows", "columns", "frames", "reason"),
    [
        (65535, 65535, None, FRAME_LIMIT),
        (65535, 65535, 10000, FRAME_LIMIT),
        (512, 65535, None, FRAME_LIMIT),
        (4096, 4096, 10000, BUDGET),
        (512, 512, 10000, BUDGET),
        (4096, 4096, 33, BUDGET),  # 32 frames of 4096 x 4096 x 16 bits are exactly the budget
    ],
)
def test_absurd_sizes_with_tiny_native_pixel_data_are_refused(
    receiver: Receiver, rows: int, columns: int, frames: int | None, reason: str
) -> None:
    ds = absurd(rows, columns, frames)
    before = rss()
    [status] = send(receiver, [ds])
    assert rss() - before < RSS_GROWTH_LIMIT
    assert_refused(receiver, ds, status, reason)


@pytest.mark.parametrize(
    "transfer_syntax",
    [RLELossless, JPEGBaseline8Bit, JPEGLosslessSV1, JPEG2000Lossless, JPEGLSLossless],
)
@pytest.mark.parametrize(("frames", "reason"), [(None, FRAME_LIMIT), (10000, FRAME_LIMIT)])
def test_absurd_sizes_with_compressed_transfer_syntaxes_are_refused(
    receiver: Receiver, transfer_syntax: str, frames: int | None, reason: str
) -> None:
    ds = absurd(65535, 65535, frames, transfer_syntax, pixel_data=b"\xff\xd8\xff\xd9" * 8)
    before = rss()
    [status] = send(receiver, [ds])
    assert rss() - before < RSS_GROWTH_LIMIT
    assert_refused(receiver, ds, status, reason)


def test_compressed_frames_over_the_budget_are_refused(receiver: Receiver) -> None:
    ds = absurd(2048, 2048, 200, JPEG2000Lossless, pixel_data=b"\xff\x4f\xff\x51" * 4)
    before = rss()
    [status] = send(receiver, [ds])
    assert rss() - before < RSS_GROWTH_LIMIT
    assert_refused(receiver, ds, status, BUDGET)


def test_fewer_compressed_fragments_than_frames_is_refused(receiver: Receiver) -> None:
    ds = absurd(32, 32, 4, RLELossless, pixel_data=b"\0" * 64)
    [status] = send(receiver, [ds])
    assert_refused(receiver, ds, status, "truncated: 1 fragment(s) for 4 frame(s)")


def test_compressed_fragment_cut_short_is_refused(receiver: Receiver) -> None:
    ds = absurd(32, 32, None, RLELossless)
    # an item that declares 1000 bytes where 10 follow, then the sequence delimiter
    ds.PixelData = (
        struct.pack("<HHL", 0xFFFE, 0xE000, 0)
        + struct.pack("<HHL", 0xFFFE, 0xE000, 1000)
        + b"\0" * 10
    )
    [status] = send(receiver, [ds])
    assert_refused(receiver, ds, status, "compressed pixel data is malformed")


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter")
def test_compressed_transfer_cut_off_is_refused(receiver: Receiver) -> None:
    ds = slice_(seed=3)
    ds.compress(RLELossless)
    body = encode(ds, False, True)
    assert body is not None
    # cut inside the pixel data's fragments: pydicom then reads no element at all
    status = send_bytes(receiver, ds, body[:-100], RLELossless)
    assert_refused(receiver, ds, status, "cut short", CANNOT_UNDERSTAND)


def test_native_pixel_data_under_a_compressed_syntax_is_refused(receiver: Receiver) -> None:
    ds = slice_(seed=4)
    body = encode(ds, False, True)
    assert body is not None
    status = send_bytes(receiver, ds, body, JPEGBaseline8Bit)
    assert_refused(receiver, ds, status, "not encapsulated")


def test_encapsulated_pixel_data_under_a_native_syntax_is_refused(receiver: Receiver) -> None:
    ds = slice_(seed=5)
    ds.compress(RLELossless)
    body = encode(ds, False, True)
    assert body is not None
    status = send_bytes(receiver, ds, body, ExplicitVRLittleEndian)
    assert_refused(receiver, ds, status, "is encapsulated although")


def test_element_claiming_gigabytes_is_refused_without_allocating(receiver: Receiver) -> None:
    ds = slice_(seed=6)
    body = encode(ds, False, True)
    assert body is not None
    # the pixel data element (OW: a 4-byte length) claims almost 4 GiB
    at = body.index(struct.pack("<HH", 0x7FE0, 0x0010) + b"OW")
    body = body[: at + 8] + struct.pack("<L", 0xFFFFFFF0) + body[at + 12 :]
    before = rss()
    status = send_bytes(receiver, ds, body, ExplicitVRLittleEndian)
    assert rss() - before < RSS_GROWTH_LIMIT
    assert_refused(receiver, ds, status, "truncated")


def test_the_largest_allowed_frame_is_stored(receiver: Receiver) -> None:
    ds = absurd(MAX_FRAME_SIDE, MAX_FRAME_SIDE, None, pixel_data=b"\0" * (MAX_FRAME_SIDE**2 * 2))
    assert send(receiver, [ds]) == [SUCCESS]
    assert receiver.catalogue.has_instance(str(ds.SOPInstanceUID))


def test_real_compressed_and_multiframe_files_are_still_stored(
    receiver: Receiver, shared_data: Path
) -> None:
    paths = sorted((shared_data / "transfer_syntaxes_siemens").glob("*.dcm"))
    paths += sorted((shared_data / "enhanced_mr_siemens_xa10").glob("*.dcm"))
    datasets = [pydicom.dcmread(p) for p in paths]
    assert send(receiver, datasets) == [SUCCESS] * len(datasets)
    assert receiver.stats.rejected == 0
