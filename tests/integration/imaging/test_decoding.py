"""Every accepted transfer syntax decodes into the same volume (lossy ones: close to it).

The compressed files are made by real encoders: dcmtk's dcmcjpeg (JPEG baseline, 12-bit
extended, lossless) and dcmconv (deflate, big endian, implicit VR), and pydicom's own encoders
(RLE, JPEG-LS, JPEG 2000) — not by the decoders under test.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000, JPEG2000Lossless, JPEGLSLossless, JPEGLSNearLossless, RLELossless
from support.factories import phantom_ct_series
from support.paths import require

from triage.imaging.volume import volume_from_datasets
from triage.receive.receiver import ACCEPTED_TRANSFER_SYNTAXES

pytestmark = pytest.mark.integration

SHAPE = (64, 64, 10)  # 10 compressed images: decoded in worker processes

# name -> (dcmtk tool and option | pydicom encoder, lossless?)
DCMTK = {
    "1.2.840.10008.1.2.4.50": (["dcmcjpeg", "+eb"], False),  # JPEG baseline, 8 bit
    "1.2.840.10008.1.2.4.51": (["dcmcjpeg", "+ee"], False),  # JPEG extended, 12 bit
    "1.2.840.10008.1.2.4.57": (["dcmcjpeg", "+el"], True),  # JPEG lossless
    "1.2.840.10008.1.2.4.70": (["dcmcjpeg", "+e1"], True),  # JPEG lossless SV1
    "1.2.840.10008.1.2.1.99": (["dcmconv", "+td"], True),  # deflate
    "1.2.840.10008.1.2.2": (["dcmconv", "+tb"], True),  # explicit VR big endian
    "1.2.840.10008.1.2": (["dcmconv", "+ti"], True),  # implicit VR little endian
}
PYDICOM = {
    RLELossless: ({}, True),
    JPEGLSLossless: ({}, True),
    JPEGLSNearLossless: ({"jls_error": 3}, False),
    JPEG2000Lossless: ({}, True),
    JPEG2000: ({"j2k_cr": [10]}, False),
}


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    folder = tmp_path_factory.mktemp("explicit")
    datasets = phantom_ct_series("decoding", 3, SHAPE, (3.5, 3.5, 5.0))
    for n, ds in enumerate(datasets):
        ds.save_as(folder / f"{n}.dcm", enforce_file_format=True)
    return folder, volume_from_datasets(datasets).array.copy()


def _encode(original: Path, syntax: str, out: Path) -> list[pydicom.Dataset]:
    out.mkdir()
    for source in sorted(original.iterdir()):
        target = out / source.name
        if syntax in DCMTK:
            tool, option = DCMTK[syntax][0]
            subprocess.run([require(tool), option, str(source), str(target)], check=True)
        else:
            ds = pydicom.dcmread(source)
            ds.compress(syntax, **PYDICOM[syntax][0])
            ds.save_as(target, enforce_file_format=True)
    datasets = [pydicom.dcmread(p) for p in sorted(out.iterdir())]
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in datasets} == {syntax}
    return datasets


def test_every_encodable_accepted_syntax_is_covered() -> None:
    assert set(DCMTK) | set(PYDICOM) | {"1.2.840.10008.1.2.1"} == set(ACCEPTED_TRANSFER_SYNTAXES)


@pytest.mark.parametrize("syntax", sorted(set(DCMTK) | set(PYDICOM)))
def test_syntax_decodes_to_the_original_volume(
    syntax: str, original: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    folder, expected = original
    datasets = _encode(folder, syntax, tmp_path / "encoded")
    volume = volume_from_datasets(datasets)
    lossless = (DCMTK.get(syntax) or PYDICOM[syntax])[1]
    if lossless:
        np.testing.assert_array_equal(volume.array, expected)
    else:  # lossy: close to the original, over the whole (noisy) phantom head; 8-bit JPEG
        # baseline holds the 12-bit range in steps of 16 HU, so its error is the largest
        error = np.abs(volume.array - expected)
        assert float(error.mean()) < 25, f"mean error {error.mean():.1f} HU"
        assert np.corrcoef(volume.array.ravel(), expected.ravel())[0, 1] > 0.99


def test_a_corrupt_compressed_slice_is_named_and_the_series_still_loads(
    original: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    folder, expected = original
    datasets = _encode(folder, JPEG2000Lossless, tmp_path / "encoded")
    broken = datasets[2]
    frame = pydicom.encaps.generate_frames(broken.PixelData, number_of_frames=1)
    payload = bytearray(next(frame))
    payload[20:] = bytes(len(payload) - 20)  # a codestream cut after its header
    broken.PixelData = pydicom.encaps.encapsulate([bytes(payload)])
    names = [f"{n}.dcm" for n in range(len(datasets))]
    volume = volume_from_datasets(datasets, names=names)
    assert any(w.startswith("left out, cannot be decoded: 2.dcm") for w in volume.warnings)
    assert volume.array.shape == expected.shape  # the hole is interpolated
    np.testing.assert_array_equal(volume.array[:, :, :2], expected[:, :, :2])
