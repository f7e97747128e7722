"""Volume geometry on real scanner data (../shared/data/dicom), checked against SimpleITK where it
is a valid reference and against the source pixels where it is not (gantry tilt)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from triage.errors import NotAVolumeError
from triage.imaging.decode import stored_values
from triage.imaging.inspect import inspect_paths
from triage.imaging.volume import AssemblyOptions, Volume, plan_series, volumes_from_datasets

sitk = pytest.importorskip("SimpleITK")

MM = 0.01
COSINE = 1e-4


def _datasets(folder: Path) -> tuple[list[pydicom.Dataset], list[str]]:
    datasets, names = [], []
    for path in sorted(folder.iterdir()):
        try:
            ds = pydicom.dcmread(path)
        except pydicom.errors.InvalidDicomError:
            continue
        if "SeriesInstanceUID" in ds and "PixelData" in ds:
            datasets.append(ds)
            names.append(str(path))
    return datasets, names


def _sitk_series(files: list[str]) -> object:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return reader.Execute()


def _assert_same_as_sitk(volume: Volume, image: object) -> None:
    geometry = volume.geometry
    assert list(geometry.shape) == list(image.GetSize())
    np.testing.assert_allclose(geometry.origin, image.GetOrigin(), atol=MM)
    np.testing.assert_allclose(geometry.spacing, image.GetSpacing(), atol=MM)
    direction = np.array(image.GetDirection()).reshape(3, 3)  # columns are the axes
    np.testing.assert_allclose(geometry.direction, direction, atol=COSINE)
    np.testing.assert_allclose(volume.array, sitk.GetArrayFromImage(image).transpose(2, 1, 0))


def test_even_head_ct_matches_simpleitk(shared_data: Path) -> None:
    folder = shared_data / "ct_head_phantom_philips_5mm"
    datasets, names = _datasets(folder)
    (volume,) = volumes_from_datasets(datasets, names=names)
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
    _assert_same_as_sitk(volume, _sitk_series(list(files)))
    assert volume.warnings == []
    assert volume.array.shape == (512, 512, 28)


def test_each_time_point_of_a_4d_mr_matches_simpleitk_on_its_files(shared_data: Path) -> None:
    datasets, names = _datasets(shared_data / "mr_ge_fmri_4d")
    stacks = plan_series(datasets, names=names)
    assert len(stacks) == 10 and all(len(s.frames) == 15 for s in stacks)
    volumes = volumes_from_datasets(datasets, names=names)
    for stack, volume in zip(stacks[::3], volumes[::3], strict=True):
        _assert_same_as_sitk(volume, _sitk_series([f.source for f in stack.frames]))
    # time point t holds the t-th acquisition of every slice: instance numbers 1-15, 16-30, ...
    second = sorted(int(f.dataset.InstanceNumber) for f in stacks[1].frames)
    assert second == list(range(16, 31))


def test_enhanced_multiframe_mr_matches_simpleitk_per_file(shared_data: Path) -> None:
    datasets, names = _datasets(shared_data / "enhanced_mr_siemens_xa10")
    volumes = volumes_from_datasets(datasets, names=names)
    assert len(volumes) == 4  # 4 files x 6 frames: 4 time points (TemporalPositionIndex)
    for volume in volumes:
        (source,) = {h.SOPInstanceUID for h in volume.headers}
        path = names[[ds.SOPInstanceUID for ds in datasets].index(source)]
        _assert_same_as_sitk(volume, sitk.ReadImage(path))


def test_every_transfer_syntax_decodes_to_the_same_pixels(shared_data: Path) -> None:
    datasets, names = _datasets(shared_data / "transfer_syntaxes_siemens")
    assert len(datasets) == 9
    syntaxes = {str(ds.file_meta.TransferSyntaxUID) for ds in datasets}
    assert len(syntaxes) == 7  # big endian, implicit/explicit LE, RLE, JPEG lossless, -LS, 2000
    reference = sitk.GetArrayFromImage(sitk.ReadImage(names[0]))[0]
    for ds, name in zip(datasets, names, strict=True):
        pixels = stored_values(ds, name)[0]
        np.testing.assert_array_equal(pixels, reference, err_msg=name)


def test_pydicom_oddities_decode(shared_data: Path) -> None:
    folder = shared_data / "pydicom_oddities"
    deflate = pydicom.dcmread(folder / "image_dfl.dcm")
    big_endian = pydicom.dcmread(folder / "ExplVR_BigEnd.dcm")
    jpeg = pydicom.dcmread(folder / "SC_rgb_jpeg_dcmtk.dcm")
    np.testing.assert_array_equal(stored_values(deflate, "dfl")[0], deflate.pixel_array)
    assert stored_values(big_endian, "be").shape == (1, 60, 80, 3)  # big endian RGB
    assert jpeg.pixel_array.shape[-1] == 3  # JPEG baseline decodes (a colour image)
    truncated = pydicom.dcmread(folder / "MR_truncated.dcm")
    with pytest.raises(NotAVolumeError, match=r"MR_truncated.*truncated"):
        stored_values(truncated, "MR_truncated.dcm")


def _tilted_series(shared_data: Path) -> tuple[list[pydicom.Dataset], list[str]]:
    return _datasets(shared_data / "ct_head_ge_tilt_uneven")


def test_tilted_uneven_ct_geometry_is_stated_and_right(shared_data: Path) -> None:
    """The GE head CT: 28 axial slices, gantry tilt 18.5 degrees, steps along the table of
    4.22 mm (x13), 1.14 mm and 7.38 mm (x13). The right geometry: rows run along +x, columns
    along IOP's column direction (0, 0.9483, -0.3173), and the slice axis follows the table
    (+z), not the slice normal; resampled onto 37 slices over the 151.94 mm the slices span."""
    datasets, names = _tilted_series(shared_data)
    (volume,) = volumes_from_datasets(datasets, names=names)
    geometry = volume.geometry
    assert geometry.shape == (512, 512, 37)
    np.testing.assert_allclose(geometry.direction[:, 0], [1, 0, 0], atol=COSINE)
    np.testing.assert_allclose(geometry.direction[:, 1], [0, 0.94832, -0.31730], atol=COSINE)
    np.testing.assert_allclose(geometry.direction[:, 2], [0, 0, 1], atol=COSINE)
    np.testing.assert_allclose(geometry.spacing, [0.48828, 0.48828, 151.94 / 36], atol=MM)
    np.testing.assert_allclose(geometry.origin, [-125.0, -123.54, 5.84], atol=MM)
    assert any("gantry tilt of 18.5 degrees" in w for w in volume.warnings)
    assert any("uneven slice spacing" in w for w in volume.warnings)
    with pytest.raises(NotAVolumeError, match="uneven slice spacing"):
        volumes_from_datasets(datasets, AssemblyOptions(uneven_spacing="refuse"), names)


def test_tilted_ct_intensity_at_source_pixel_positions(shared_data: Path) -> None:
    """Sample the volume, through its affine, where chosen source pixels lie in the patient
    (from their slice's ImagePositionPatient and orientation): the value is the source pixel's,
    within the interpolation between the two source slices around that point."""
    datasets, names = _tilted_series(shared_data)
    (volume,) = volumes_from_datasets(datasets, names=names)
    inverse = np.linalg.inv(volume.affine_lps)
    slices = sorted(datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))
    hu = [ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in slices]
    rng = np.random.default_rng(7)
    checked = 0
    for k, ds in enumerate(slices):
        row, col = (
            np.array(ds.ImageOrientationPatient[:3]),
            np.array(ds.ImageOrientationPatient[3:]),
        )
        dy, dx = (float(v) for v in ds.PixelSpacing)
        for r, c in rng.integers(100, 412, size=(20, 2)):
            point = np.array(ds.ImagePositionPatient) + c * dx * row + r * dy * col
            i, j, z = (inverse @ [*point, 1.0])[:3]
            assert abs(i - c) < 1e-3 and abs(j - r) < 1e-3  # in-plane: exactly the same pixel
            assert -1e-3 <= z <= volume.array.shape[2] - 1 + 1e-3
            low = int(np.clip(np.floor(z), 0, volume.array.shape[2] - 2))
            w = z - low
            value = (1 - w) * volume.array[c, r, low] + w * volume.array[c, r, low + 1]
            neighbours = [hu[n][r, c] for n in (k - 1, k, k + 1) if 0 <= n < len(hu)]
            assert min(neighbours) - 0.5 <= value <= max(neighbours) + 0.5
            if k < 13:  # slices 1-13 lie on the regular grid (to 0.01 mm): hardly interpolated
                steep = max(abs(float(n) - float(hu[k][r, c])) for n in neighbours)
                assert value == pytest.approx(hu[k][r, c], abs=0.5 + 0.01 * steep)
            checked += 1
    assert checked == 28 * 20


def test_inspect_lists_every_file_of_the_shared_data(shared_data: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "triage.app.cli", "inspect", "--json", str(shared_data)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"TRIAGE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    files = [p for p in shared_data.rglob("*") if p.is_file()]
    listed = sum(s["instances"] for s in report["series"]) + len(report["unreadable"])
    assert listed == len(files)
    for series in report["series"]:
        assert {"series_instance_uid", "modality", "instances", "volume", "reason", "warnings"} <= (
            set(series)
        )
        assert (series["volume"] is None) == bool(series["reason"])
        if series["volume"]:
            assert len(series["volume"]["affine"]) == 4
    by_modality = {(s["modality"], s["instances"]): s for s in report["series"]}
    assert by_modality[("CT", 28)]["volume"] is not None
    assert by_modality[("MR", 150)]["reason"].startswith("4D (time) series: 10 time points")
    assert len(by_modality[("MR", 150)]["time_points"]) == 10
    assert all(u["reason"] for u in report["unreadable"])


def test_inspect_paths_agrees_with_the_pipeline_geometry(shared_data: Path) -> None:
    folder = shared_data / "ct_head_ge_tilt_uneven"
    (series,) = inspect_paths([folder]).series
    datasets, names = _tilted_series(shared_data)
    (volume,) = volumes_from_datasets(datasets, names=names)
    assert series.volume is not None
    np.testing.assert_array_equal(series.volume.affine_lps, volume.affine_lps)
