"""`read_dicom` reads what `pydicom.dcmread` reads, element for element, on real and on broken
files: the same raw elements, the same values, the same encodings, the same errors."""

from __future__ import annotations

import io
import random
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless
from support.factories import phantom_ct_series

from triage.errors import StorageError
from triage.imaging.reading import pixel_data_buffer, raw_text, raw_us, read_dicom
from triage.imaging.volume import read_instances


def _assert_same(got: Dataset, ref: Dataset) -> None:
    assert type(got) is type(ref)
    assert got.preamble == ref.preamble  # type: ignore[attr-defined]
    assert got.original_encoding == ref.original_encoding
    for mine, theirs in ((got.file_meta, ref.file_meta), (got, ref)):  # type: ignore[attr-defined]
        assert sorted(mine._dict) == sorted(theirs._dict)
        for tag, elem in mine._dict.items():
            other = theirs._dict[tag]
            raw = isinstance(elem, RawDataElement) and isinstance(other, RawDataElement)
            if raw and elem.value is not None:  # a deferred value is compared once read, below
                assert tuple(elem) == tuple(other), tag
            a, b = mine[tag], theirs[tag]
            assert (a.VR, repr(a.value)) == (b.VR, repr(b.value)), tag


def _outcome(data: bytes, read: object) -> tuple[Dataset | None, object]:
    """The data set and the error (type) of reading it and of using every element."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = read(data)  # type: ignore[operator]
        except Exception as exc:
            return None, type(exc)
        try:
            for elem in ds.iterall():
                repr(elem.value)
        except Exception as exc:
            return ds, ("on use", type(exc))
    return ds, None


def _real_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix != ".txt")


def test_real_files_read_as_pydicom_reads_them(shared_data: Path) -> None:
    checked = 0
    for path in _real_files(shared_data):
        data = path.read_bytes()
        ref, error = _outcome(data, lambda d: pydicom.dcmread(io.BytesIO(d)))
        got, mine = _outcome(data, read_dicom)
        assert mine == error, path
        if ref is not None and got is not None:
            _assert_same(got, ref)
            checked += 1
    assert checked > 200


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless])
def test_written_series_read_as_pydicom_reads_them(tmp_path: Path, syntax: str) -> None:
    for k, ds in enumerate(phantom_ct_series("reading", shape=(32, 24, 3))):
        if syntax == RLELossless:
            ds.compress(RLELossless)
        else:
            ds.file_meta.TransferSyntaxUID = syntax
        path = tmp_path / f"{k}.dcm"
        ds.save_as(path, enforce_file_format=True)
        data = path.read_bytes()
        got, ref = read_dicom(data), pydicom.dcmread(path)
        ref.filename, ref.buffer, ref.fileobj_type = None, got.buffer, got.fileobj_type  # type: ignore[attr-defined]
        _assert_same(got, ref)
        np.testing.assert_array_equal(got.pixel_array, ref.pixel_array)


def test_native_pixel_data_is_found_where_it_lies(shared_data: Path) -> None:
    path = shared_data / "ct_head_ge_tilt_uneven" / "01.dcm"
    data = path.read_bytes()
    ds = read_dicom(data)
    found = pixel_data_buffer(ds)
    assert found is not None
    buffer, offset, length = found
    assert buffer is data  # not a copy
    assert buffer[offset : offset + length] == pydicom.dcmread(path).PixelData
    assert ds.PixelData == buffer[offset : offset + length]  # read on use, as deferred
    assert pixel_data_buffer(ds) is None  # now read: it is an ordinary element


def test_broken_files_fail_or_read_as_pydicom_does(shared_data: Path) -> None:
    """Truncated and corrupted copies: the same error, or the same data set."""
    rng = random.Random(7)
    sources = [
        shared_data / "ct_head_phantom_philips_5mm" / "I10",
        shared_data / "ct_head_ge_tilt_uneven" / "01.dcm",
        shared_data / "enhanced_mr_siemens_xa10" / "6_1.dcm",
        *sorted((shared_data / "transfer_syntaxes_siemens").iterdir()),
    ]
    for path in sources:
        original = path.read_bytes()
        for k in range(12):
            data = bytearray(original)
            if k % 2:
                data = data[: rng.randrange(0, min(len(data), 4000) if k % 4 == 1 else len(data))]
            else:
                for _ in range(rng.randint(1, 4)):
                    data[rng.randrange(128, min(len(data), 3000))] = rng.randrange(256)
            broken = bytes(data)
            ref, error = _outcome(broken, lambda d: pydicom.dcmread(io.BytesIO(d)))
            got, mine = _outcome(broken, read_dicom)
            assert mine == error, (path, k)
            if ref is not None and got is not None and error is None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the corrupted values' own warnings
                    _assert_same(got, ref)


def test_raw_values_are_pydicoms_values(shared_data: Path) -> None:
    texts = ("ImageType", "SOPClassUID", "NumberOfFrames", "ImagePositionPatient", "PixelSpacing")
    numbers = ("Rows", "Columns", "BitsAllocated", "BitsStored", "SamplesPerPixel")
    checked = 0
    for path in _real_files(shared_data):
        try:
            ref = pydicom.dcmread(path)
        except pydicom.errors.InvalidDicomError:
            continue
        ds = read_dicom(path.read_bytes())
        for keyword in texts:
            value = raw_text(ds, tag_for_keyword(keyword))  # type: ignore[arg-type]
            expected = ref.get(keyword)
            if expected is None or expected == "":
                assert value is None, (path, keyword)
            elif isinstance(expected, str | int | float):
                assert str(value) == str(expected), (path, keyword)
            else:
                assert [str(v) for v in value] == [str(v) for v in expected], (path, keyword)
        for keyword in numbers:
            assert raw_us(ds, tag_for_keyword(keyword)) == ref.get(keyword), (path, keyword)  # type: ignore[arg-type]
        checked += 1
    assert checked > 200


def test_instances_that_wait_are_loaded_in_threads_and_kept_in_order(shared_data: Path) -> None:
    paths = sorted((shared_data / "ct_head_ge_tilt_uneven").iterdir())[:6]
    loaded: list[str] = []

    def slow(key: str) -> bytes:  # a network store: each instance waits
        time.sleep(0.01)
        loaded.append(key)
        return Path(key).read_bytes()

    keys = [str(p) for p in paths]
    fast = read_instances(lambda key: Path(key).read_bytes(), keys, workers=4)
    waited = read_instances(slow, keys, workers=4)
    assert [ds.SOPInstanceUID for ds in waited] == [ds.SOPInstanceUID for ds in fast]
    assert sorted(loaded) == sorted(keys)

    def failing(key: str) -> bytes:
        if key == keys[3]:
            raise StorageError(f"{key} is gone")
        return slow(key)

    with pytest.raises(StorageError, match="is gone"):
        read_instances(failing, keys, workers=4)
