"""Series -> volume on synthetic series built to have one known problem each."""

from __future__ import annotations

import copy
import io
import random
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import RLELossless, generate_uid

from triage.errors import NotAVolumeError
from triage.imaging.inspect import inspect_paths
from triage.imaging.volume import (
    AssemblyOptions,
    assemble_volume,
    volume_from_datasets,
    volumes_from_datasets,
)
from triage.synthetic.series import ct_series

SHAPE = (16, 12, 8)  # columns, rows, slices
SPACING = (0.8, 0.9, 2.5)


def _ramp(shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """HU that say where they are: i + 20 j + 300 k - 1000."""
    i, j, k = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    return (i + 20 * j + 300 * k - 1000).astype(np.float32)


def _series(
    hu: np.ndarray | None = None,
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    tag: str = "a",
    spacing: tuple[float, float, float] = SPACING,
    **overrides: object,
) -> list[Dataset]:
    attrs: dict[str, object] = {
        "study_instance_uid": generate_uid(entropy_srcs=["volume-test", tag, "study"]),
        "series_instance_uid": generate_uid(entropy_srcs=["volume-test", tag, "series"]),
        "patient_id": "P1",
        "patient_name": "Test^Volume",
        "accession_number": "A1",
        "study_description": "CT head",
        "series_description": f"series {tag}",
        "series_number": 2,
        "study_date": "20240517",
        "study_time": "120000",
        "orientation": orientation,
        **overrides,
    }
    return ct_series(_ramp() if hu is None else hu, spacing, **attrs)  # type: ignore[arg-type]


def _voxel_to_lps(volume_affine: np.ndarray, ijk: tuple[float, float, float]) -> np.ndarray:
    return (volume_affine @ [*ijk, 1.0])[:3]


def _assert_every_pixel_is_where_its_slice_says(volume_array, affine, datasets) -> None:
    """Each source pixel (r, c) of each slice is found at the voxel the affine maps it to."""
    inverse = np.linalg.inv(affine)
    for ds in datasets:
        row = np.array(ds.ImageOrientationPatient[:3], dtype=float)
        col = np.array(ds.ImageOrientationPatient[3:], dtype=float)
        dy, dx = (float(v) for v in ds.PixelSpacing)
        pixels = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        for r, c in [(0, 0), (ds.Rows - 1, 0), (0, ds.Columns - 1), (5, 7)]:
            point = np.array(ds.ImagePositionPatient, dtype=float) + c * dx * row + r * dy * col
            i, j, k = np.rint(inverse @ [*point, 1.0])[:3].astype(int)
            assert volume_array[i, j, k] == pixels[r, c]


def test_sorted_along_the_normal_not_by_instance_number() -> None:
    datasets = _series()
    shuffled = datasets[:]
    random.Random(3).shuffle(shuffled)
    for n, ds in enumerate(shuffled):  # instance numbers that contradict the positions
        ds.InstanceNumber = n + 1
    volume = volume_from_datasets(shuffled)
    np.testing.assert_array_equal(volume.array, _ramp())
    np.testing.assert_allclose(volume.spacing, (0.8, 0.9, 2.5))
    assert volume.warnings == []


def test_volume_array_and_affine_agree_with_every_slice() -> None:
    datasets = _series()
    volume = volume_from_datasets(datasets)
    _assert_every_pixel_is_where_its_slice_says(volume.array, volume.affine_lps, datasets)
    np.testing.assert_allclose(
        _voxel_to_lps(volume.affine_lps, (0, 0, 0)), datasets[0].ImagePositionPatient, atol=1e-3
    )


@pytest.mark.parametrize(
    "orientation",
    [
        (0, 1, 0, 0, 0, -1),  # sagittal
        (1, 0, 0, 0, 0, -1),  # coronal
        (1, 0, 0, 0, -1, 0),  # axial, feet-first-like: normal points to the feet
        (0.8660254, 0.5, 0, -0.5, 0.8660254, 0),  # axial rotated 30 degrees in plane
        (1, 0, 0, 0, 0.8660254, -0.5),  # oblique
    ],
)
def test_non_axial_orientations(orientation: tuple[float, ...]) -> None:
    datasets = _series(orientation=orientation)
    volume = volume_from_datasets(list(reversed(datasets)))
    _assert_every_pixel_is_where_its_slice_says(volume.array, volume.affine_lps, datasets)
    normal = np.cross(orientation[:3], orientation[3:])
    assert volume.affine_lps[:3, 2] @ normal > 0  # slices run along the normal
    np.testing.assert_allclose(volume.spacing, (0.8, 0.9, 2.5), atol=1e-6)


def test_negative_spacing_direction_gives_the_same_volume() -> None:
    """Slices numbered head to feet (positions decreasing with InstanceNumber)."""
    datasets = _series()
    reversed_numbers = copy.deepcopy(datasets)
    for ds in reversed_numbers:
        ds.InstanceNumber = len(datasets) + 1 - ds.InstanceNumber
    a = volume_from_datasets(datasets)
    b = volume_from_datasets(sorted(reversed_numbers, key=lambda ds: ds.InstanceNumber))
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_array_equal(a.affine_lps, b.affine_lps)


def test_exact_duplicates_are_dropped() -> None:
    datasets = _series()
    copy_of_same_instance = copy.deepcopy(datasets[3])
    same_pixels_new_uid = copy.deepcopy(datasets[5])
    same_pixels_new_uid.SOPInstanceUID = generate_uid()
    volume = volume_from_datasets([*datasets, copy_of_same_instance, same_pixels_new_uid])
    np.testing.assert_array_equal(volume.array, _ramp())
    assert "dropped 1 copy(ies) of the same instance" in volume.warnings
    assert any("duplicate slice" in w for w in volume.warnings)


def test_different_images_at_one_position_are_refused() -> None:
    datasets = _series()
    other = copy.deepcopy(datasets[2])
    other.SOPInstanceUID = generate_uid()
    other.PixelData = (other.pixel_array + 5).astype(other.pixel_array.dtype).tobytes()
    with pytest.raises(NotAVolumeError, match="duplicate positions: 1 of 8"):
        volume_from_datasets([*datasets, other])


def test_missing_slice_is_reported_and_interpolated() -> None:
    datasets = _series()
    del datasets[4]
    volume = volume_from_datasets(datasets)
    assert volume.array.shape == SHAPE
    np.testing.assert_allclose(volume.array, _ramp(), atol=1e-3)  # a ramp interpolates exactly
    assert any("gap of 5.00 mm after slice 4 (about 1 slice(s)" in w for w in volume.warnings)
    with pytest.raises(NotAVolumeError, match="missing slice.*TRIAGE_UNEVEN_SPACING=refuse"):
        volume_from_datasets(datasets, AssemblyOptions(uneven_spacing="refuse"))


def test_a_gap_too_large_to_interpolate_is_refused() -> None:
    hu = _ramp((16, 12, 12))
    datasets = _series(hu)
    del datasets[3:8]
    with pytest.raises(NotAVolumeError, match="too much is missing"):
        volume_from_datasets(datasets)


def test_uneven_spacing_is_resampled_onto_a_regular_grid() -> None:
    datasets = _series(_ramp((16, 12, 12)))
    z0 = float(datasets[0].ImagePositionPatient[2])
    offsets = [0, 2.5, 5, 7.5, 10, 11, 16, 21, 26, 31, 36, 41]  # 2.5 mm, then 1 mm, then 5 mm
    for ds, dz in zip(datasets, offsets, strict=True):
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], z0 + dz]
    volume = volume_from_datasets(datasets)
    count = round(41 / np.median(np.diff(offsets))) + 1
    assert volume.array.shape[2] == count
    np.testing.assert_allclose(volume.spacing[2], 41 / (count - 1))
    assert any("uneven slice spacing (1.00-5.00 mm)" in w for w in volume.warnings)
    # a voxel's value is the linear interpolation between its two neighbouring slices
    zs = np.arange(count) * volume.spacing[2]
    expected = np.interp(zs, offsets, 300 * np.arange(12) - 1000)
    np.testing.assert_allclose(volume.array[0, 0, :], expected, atol=1e-3)


def test_gantry_tilt_is_a_shear_in_the_affine() -> None:
    """Slices tilted 15 degrees about x, stacked along z (the table): the affine's slice column
    is the table step, and every source pixel is where the affine says."""
    tilt = np.radians(15)
    orientation = (1, 0, 0, 0, np.cos(tilt), -np.sin(tilt))
    datasets = _series(orientation=orientation)
    for k, ds in enumerate(datasets):
        ds.ImagePositionPatient = [-6.0, -5.0, 3.0 * k]  # the table moves 3 mm along z
    volume = volume_from_datasets(datasets)
    np.testing.assert_allclose(volume.affine_lps[:3, 2], [0, 0, 3.0], atol=1e-6)
    _assert_every_pixel_is_where_its_slice_says(volume.array, volume.affine_lps, datasets)
    assert any("gantry tilt of 15.0 degrees" in w for w in volume.warnings)


def test_slices_shifted_in_plane_are_refused() -> None:
    datasets = _series()
    datasets[3].ImagePositionPatient = [
        float(datasets[3].ImagePositionPatient[0]) + 4,
        *datasets[3].ImagePositionPatient[1:],
    ]
    with pytest.raises(NotAVolumeError, match="not on one line"):
        volume_from_datasets(datasets)


def test_per_slice_rescale_is_applied() -> None:
    datasets = _series()
    for k, ds in enumerate(datasets):
        slope, intercept = 1 + k % 3, -1024 * (k % 2)
        hu = ds.pixel_array.astype(np.float64)
        ds.PixelData = np.rint((hu - intercept) / slope).astype(np.int16).tobytes()
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    volume = volume_from_datasets(datasets)
    np.testing.assert_allclose(volume.array, _ramp(), atol=1.5)


@pytest.mark.parametrize("signed", [False, True])
def test_bits_above_bits_stored_are_dropped(signed: bool) -> None:
    """12 bits stored in 16: what the upper 4 bits hold (an overlay, noise) is not a value."""
    datasets = _series()
    offset = 0 if signed else 1000  # the ramp's -1000..1335 HU in 12 bits
    for k, ds in enumerate(datasets):
        stored = (np.rint(ds.pixel_array.astype(np.float64)) + offset).astype(np.int16)
        if k % 2:  # every other slice has bits set above BitsStored (not a sign extension)
            stored = (stored & 0x0FFF) | 0x5000
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, int(signed)
        for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue"):
            ds.pop(keyword, None)
        ds.PixelData = stored.astype(np.int16 if signed else np.uint16).tobytes()
        ds.RescaleSlope, ds.RescaleIntercept = 1, -offset
    blobs = []
    for ds in datasets:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        blobs.append(buffer.getvalue())
    volume = assemble_volume(lambda key: blobs[int(key)], [str(k) for k in range(len(blobs))])
    np.testing.assert_array_equal(volume.array, _ramp())


def test_mixed_orientations_and_sizes_are_refused() -> None:
    axial = _series(tag="ax")
    sagittal = _series(orientation=(0, 1, 0, 0, 0, -1), tag="sag")
    with pytest.raises(NotAVolumeError, match="mixed orientations"):
        volume_from_datasets(axial + sagittal[:2])
    small = _series(_ramp((8, 8, 8)), tag="small")
    with pytest.raises(NotAVolumeError, match="different sizes"):
        volume_from_datasets(axial[:4] + small[4:])


def test_a_scout_among_the_slices_is_left_out() -> None:
    datasets = _series()
    scout = copy.deepcopy(datasets[0])
    scout.SOPInstanceUID = generate_uid()
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    volume = volume_from_datasets([*datasets[:4], scout, *datasets[4:]])
    np.testing.assert_array_equal(volume.array, _ramp())
    assert "left out 1 localizer (scout) image(s)" in volume.warnings


def test_too_few_slices_and_single_images() -> None:
    datasets = _series()
    with pytest.raises(NotAVolumeError, match="a single image"):
        volume_from_datasets(datasets[:1])
    with pytest.raises(NotAVolumeError, match="2 images at 2 position"):
        volume_from_datasets(datasets[:2])


def test_4d_series_is_split_into_time_points() -> None:
    first = _series()
    second = copy.deepcopy(first)
    for ds in second:
        ds.SOPInstanceUID = generate_uid()
        ds.TemporalPositionIdentifier = 2
        ds.PixelData = (ds.pixel_array + 7).astype(np.int16).tobytes()
    for ds in first:
        ds.TemporalPositionIdentifier = 1
    mixed = [ds for pair in zip(second, first, strict=True) for ds in pair]
    volumes = volumes_from_datasets(mixed)
    assert [v.time_point for v in volumes] == [0, 1]
    np.testing.assert_array_equal(volumes[0].array, _ramp())
    np.testing.assert_array_equal(volumes[1].array, _ramp() + 7)
    with pytest.raises(NotAVolumeError, match="4D .* 2 time points of 8 slices"):
        volume_from_datasets(mixed)


def test_undecodable_slice_is_named_and_left_out() -> None:
    datasets = _series()
    broken = datasets[4]
    broken.PixelData = broken.PixelData[:100]  # truncated
    volume = volume_from_datasets(datasets, names=[f"slice{k}.dcm" for k in range(8)])
    assert volume.array.shape == SHAPE
    assert any("slice4.dcm: pixel data is truncated" in w for w in volume.warnings)
    np.testing.assert_allclose(volume.array, _ramp(), atol=1e-3)  # interpolated over the hole
    for ds in datasets[:6]:  # only two slices left: no volume, and the files are named
        ds.PixelData = ds.PixelData[:10]
    with pytest.raises(NotAVolumeError, match="slice0.dcm: pixel data is truncated"):
        volume_from_datasets(datasets, names=[f"slice{k}.dcm" for k in range(8)])


def test_compressed_series_decodes_while_it_is_read_and_names_a_broken_slice() -> None:
    """RLE slices are handed to the decoding processes as they are read from the store."""
    hu = _ramp((16, 12, 10))
    blobs = {}
    for n, ds in enumerate(_series(hu, tag="rle")):
        ds.compress(RLELossless)
        if n == 6:  # a frame cut short: its RLE header promises more than is there
            fragment = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
            ds.PixelData = pydicom.encaps.encapsulate([fragment[:80]])
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        blobs[f"slice{n}.dcm"] = buffer.getvalue()
    volume = assemble_volume(blobs.__getitem__, list(blobs))
    assert any(w.startswith("left out, cannot be decoded: slice6.dcm") for w in volume.warnings)
    np.testing.assert_allclose(volume.array, hu, atol=1e-3)  # interpolated over the hole


def test_absurd_sizes_are_refused_before_allocating() -> None:
    datasets = _series()
    for ds in datasets:
        ds.Rows, ds.Columns = 65535, 65535
    with pytest.raises(NotAVolumeError, match="larger than 4096 per side"):
        volume_from_datasets(datasets)


def test_metatensor_affine_is_ras() -> None:
    volume = volume_from_datasets(_series())
    image = volume.metatensor()
    assert tuple(image.shape) == (1, *SHAPE)
    ras = np.asarray(image.affine)
    np.testing.assert_allclose(ras[:2], -volume.affine_lps[:2])
    np.testing.assert_allclose(ras[2:], volume.affine_lps[2:])


def test_assemble_from_store_reads_each_instance_once() -> None:
    datasets = _series()
    blobs = {}
    for n, ds in enumerate(datasets):
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        blobs[f"k{n}"] = buffer.getvalue()
    reads: list[str] = []

    def load(key: str) -> bytes:
        reads.append(key)
        return blobs[key]

    volume = assemble_volume(load, list(blobs))
    np.testing.assert_array_equal(volume.array, _ramp())
    assert sorted(reads) == sorted(blobs)


def test_two_series_interleaved_in_one_folder(tmp_path: Path) -> None:
    a = _series(tag="one")
    b = _series(_ramp() + 3, tag="two", spacing=(0.8, 0.9, 5.0))
    for n, ds in enumerate(ds for pair in zip(a, b, strict=True) for ds in pair):
        ds.save_as(tmp_path / f"IM{n:04d}", enforce_file_format=True)
    (tmp_path / "notes.txt").write_text("not dicom")
    inspection = inspect_paths([tmp_path])
    assert len(inspection.series) == 2
    by_uid = {s.series_instance_uid: s for s in inspection.series}
    one, two = by_uid[a[0].SeriesInstanceUID], by_uid[b[0].SeriesInstanceUID]
    assert one.volume is not None and two.volume is not None
    assert one.volume.spacing[2] == pytest.approx(2.5) and two.volume.spacing[2] == pytest.approx(5)
    assert [u.path for u in inspection.unreadable] == [str(tmp_path / "notes.txt")]
    assert pydicom.dcmread(tmp_path / "IM0000").SeriesInstanceUID == a[0].SeriesInstanceUID
