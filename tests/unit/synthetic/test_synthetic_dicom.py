"""Synthetic CT series: valid CT Image IOD, geometry and HU survive a write/read round trip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from support.dicom_checks import assert_dciodvfy_clean

from triage.synthetic.phantom import head_phantom
from triage.synthetic.series import CT_IMAGE_STORAGE, ct_series, localizer, write_series

STUDY: dict[str, Any] = {
    "study_instance_uid": "1.2.826.0.1.3680043.8.498.1",
    "patient_id": "PHANTOM-1",
    "patient_name": "Phantom^Head",
    "accession_number": "ACC0001",
    "study_description": "CT HEAD WITHOUT CONTRAST",
    "study_date": "20240517",
    "study_time": "143005",
}
SERIES_UID = "1.2.826.0.1.3680043.8.498.1.2"


def _volume() -> np.ndarray:
    # Non-square in-plane and distinct values per axis, so a transposed slice cannot pass.
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1100.0, 3200.0, size=(40, 48, 6)).astype(np.float32)
    hu[3, 5, :] = [-1024.4, 0.5, 1.49, -0.5, 3071.2, 40.0]
    return hu


def _series(hu: np.ndarray, **extra: Any) -> list[pydicom.Dataset]:
    return ct_series(
        hu,
        (0.7, 0.6, 2.5),
        series_instance_uid=SERIES_UID,
        series_description="Axial 2.5 mm",
        series_number=2,
        **STUDY,
        **extra,
    )


def _affine(ds: pydicom.Dataset, step: np.ndarray) -> np.ndarray:
    """The project's voxel -> LPS affine, built from one instance as the pipeline would."""
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    affine = np.eye(4)
    affine[:3, 0] = iop[:3] * col_spacing
    affine[:3, 1] = iop[3:] * row_spacing
    affine[:3, 2] = step
    affine[:3, 3] = np.asarray(ds.ImagePositionPatient, dtype=float)
    return affine


def test_round_trip_keeps_hu_and_geometry(tmp_path: Path) -> None:
    hu = _volume()
    paths = write_series(_series(hu), tmp_path / "ct")
    assert len(paths) == 6 and all(p.is_file() for p in paths)
    read = sorted((pydicom.dcmread(p) for p in paths), key=lambda d: int(d.InstanceNumber))
    expected = np.clip(np.rint(hu), -1024, 3071)
    first = np.asarray(read[0].ImagePositionPatient, dtype=float)
    for k, ds in enumerate(read):
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.SOPClassUID == CT_IMAGE_STORAGE
        assert ds.Modality == "CT" and ds.BodyPartExamined == "HEAD"
        assert (ds.Rows, ds.Columns) == (48, 40)
        assert [float(v) for v in ds.PixelSpacing] == [0.6, 0.7]
        assert float(ds.RescaleSlope) == 1.0
        values = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope)
        values += float(ds.RescaleIntercept)
        np.testing.assert_array_equal(values.T, expected[:, :, k])
        position = np.asarray(ds.ImagePositionPatient, dtype=float)
        np.testing.assert_allclose(position, first + [0.0, 0.0, 2.5 * k], atol=1e-4)
        assert float(ds.SliceThickness) == 2.5 == float(ds.SpacingBetweenSlices)
    # Centred on the patient origin by default.
    np.testing.assert_allclose(first, [-39 * 0.7 / 2, -47 * 0.6 / 2, -5 * 2.5 / 2], atol=1e-4)


def test_oblique_series_steps_along_the_slice_normal(tmp_path: Path) -> None:
    c, s = np.cos(np.deg2rad(15)), np.sin(np.deg2rad(15))
    orientation = (1.0, 0.0, 0.0, 0.0, c, s)  # gantry-tilt-like rotation about x
    series = _series(_volume(), orientation=orientation, origin=(-10.0, -20.0, 30.0))
    normal = np.cross([1.0, 0.0, 0.0], [0.0, c, s])
    for k, ds in enumerate(series):
        np.testing.assert_allclose(
            np.asarray(ds.ImagePositionPatient, dtype=float),
            np.array([-10.0, -20.0, 30.0]) + 2.5 * k * normal,
            atol=1e-4,
        )
        np.testing.assert_allclose(float(ds.SliceLocation), np.dot(ds.ImagePositionPatient, normal))


def test_affine_from_dicom_matches_the_phantom_affine() -> None:
    phantom = head_phantom(np.random.default_rng(0), (48, 56, 8), (4.0, 3.5, 6.0), lesion=False)
    series = ct_series(
        phantom.hu,
        phantom.spacing,
        series_instance_uid=SERIES_UID,
        series_description="Axial",
        series_number=2,
        **STUDY,
    )
    step = np.asarray(series[1].ImagePositionPatient, dtype=float) - np.asarray(
        series[0].ImagePositionPatient, dtype=float
    )
    np.testing.assert_allclose(_affine(series[0], step), phantom.affine_lps, atol=1e-4)


def test_uids_are_deterministic_and_distinct() -> None:
    a = _series(_volume())
    b = _series(_volume())
    assert [d.SOPInstanceUID for d in a] == [d.SOPInstanceUID for d in b]
    assert len({d.SOPInstanceUID for d in a}) == len(a)
    assert {d.FrameOfReferenceUID for d in a} == {a[0].FrameOfReferenceUID}
    other = ct_series(
        _volume(),
        (0.7, 0.6, 2.5),
        series_instance_uid=SERIES_UID + ".9",
        series_description="other",
        series_number=3,
        **STUDY,
    )
    assert not {d.SOPInstanceUID for d in a} & {d.SOPInstanceUID for d in other}
    prefixed = _series(_volume(), instance_uid_prefix="1.2.3.")
    assert all(d.SOPInstanceUID.startswith("1.2.3.") for d in prefixed)
    assert all(len(d.SOPInstanceUID) <= 64 for d in a + prefixed)


def test_localizer_is_a_scout_in_the_same_study(tmp_path: Path) -> None:
    phantom = head_phantom(np.random.default_rng(2), (64, 64, 20), (3.5, 3.5, 7.0), lesion=False)
    scout = localizer(phantom.hu, phantom.spacing, series_instance_uid=SERIES_UID + ".1", **STUDY)
    axial = ct_series(
        phantom.hu,
        phantom.spacing,
        series_instance_uid=SERIES_UID,
        series_description="Axial",
        series_number=2,
        **STUDY,
    )
    assert list(scout.ImageType) == ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    assert scout.StudyInstanceUID == axial[0].StudyInstanceUID
    assert scout.FrameOfReferenceUID == axial[0].FrameOfReferenceUID
    assert scout.SeriesInstanceUID != axial[0].SeriesInstanceUID
    (path,) = write_series([scout], tmp_path / "scout")
    read = pydicom.dcmread(path)
    assert read.pixel_array.shape == (20, 64)
    assert_dciodvfy_clean(path)


def test_dciodvfy_finds_no_error(tmp_path: Path) -> None:
    phantom = head_phantom(np.random.default_rng(4), (64, 64, 4), (3.5, 3.5, 5.0), lesion=True)
    series = ct_series(
        phantom.hu,
        phantom.spacing,
        series_instance_uid=SERIES_UID,
        series_description="Axial 5 mm",
        series_number=2,
        **STUDY,
    )
    paths = write_series(series, tmp_path)
    for path in (paths[0], paths[-1]):
        assert_dciodvfy_clean(path)


def test_not_a_volume_is_rejected() -> None:
    with pytest.raises(ValueError, match="3D"):
        _series(np.zeros((4, 4), dtype=np.float32))
