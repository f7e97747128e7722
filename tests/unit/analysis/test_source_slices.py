"""A mask and a point go back onto the source series' own slices: exactly on a synthetic
series, and on the real GE head CT with gantry tilt and uneven spacing."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from support.factories import lesion_ct_series
from support.real_series import GE_TILT_UNEVEN, series_files, series_headers

from triage.analysis.preprocess import InputSpec, model_input_with_affine
from triage.analysis.source_slices import key_images, mask_on_source_slices, slice_geometry
from triage.errors import TriageError
from triage.imaging.volume import assemble_volume

#: the shipped head-CT models' input grid
MODEL_INPUT = InputSpec(pixdim=(2.5, 2.5, 5.0), spatial_size=(96, 96, 32), window=(0.0, 100.0))


def pixel_centres(header: object) -> np.ndarray:
    """LPS mm of every pixel centre of one image, (rows, columns, 3), from its own header."""
    g = slice_geometry(header)  # type: ignore[arg-type]
    r = np.arange(g.rows)[:, None, None] * g.pixel_spacing[0] * g.column_direction
    c = np.arange(g.columns)[None, :, None] * g.pixel_spacing[1] * g.row_direction
    return g.position + r + c


def sphere(shape: tuple[int, ...], affine: np.ndarray, centre: np.ndarray, radius: float):
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    lps = ijk @ affine[:3, :3].T + affine[:3, 3]
    return np.linalg.norm(lps - centre, axis=-1) <= radius


def test_a_mask_on_the_series_grid_comes_back_pixel_for_pixel() -> None:
    phantom, headers = lesion_ct_series("source_slices_exact", seed=3)
    frames = mask_on_source_slices(phantom.lesion_mask, phantom.affine_lps, headers)
    assert frames.shape == (len(headers), 48, 48) and frames.dtype == np.bool_
    for k, frame in enumerate(frames):  # slice k holds hu[:, :, k].T
        np.testing.assert_array_equal(frame, phantom.lesion_mask[:, :, k].T)
    assert frames.any()


def test_frames_follow_the_order_of_the_source_images() -> None:
    phantom, headers = lesion_ct_series("source_slices_order", seed=3)
    shuffled = headers[::-1]
    frames = mask_on_source_slices(phantom.lesion_mask, phantom.affine_lps, shuffled)
    for f, header in enumerate(shuffled):
        k = int(header.InstanceNumber) - 1
        np.testing.assert_array_equal(frames[f], phantom.lesion_mask[:, :, k].T)


def test_a_mask_on_the_model_grid_lands_on_the_lesion() -> None:
    phantom, headers = lesion_ct_series("source_slices_model_grid", seed=5)
    x, affine = model_input_with_affine(
        phantom.hu, phantom.affine_lps, MODEL_INPUT, torch.device("cpu")
    )
    assert phantom.lesion is not None
    centre = (phantom.affine_lps @ np.array([*phantom.lesion.centre_voxel, 1.0]))[:3]
    mask = sphere(tuple(x.shape[2:]), affine, centre, 10.0)
    frames = mask_on_source_slices(mask, affine, headers)
    half_diagonal = float(np.linalg.norm(MODEL_INPUT.pixdim)) / 2
    for header, frame in zip(headers, frames, strict=True):
        distance = np.linalg.norm(pixel_centres(header) - centre, axis=-1)
        assert not frame[distance > 10.0 + half_diagonal].any()
        assert frame[distance < 10.0 - half_diagonal].all()
    assert frames.sum() > 0


@pytest.fixture(scope="module")
def ge_volume():
    files = series_files(GE_TILT_UNEVEN)
    volume = assemble_volume(lambda key: Path(key).read_bytes(), [str(f) for f in files])
    return volume, series_headers(GE_TILT_UNEVEN)


def test_on_the_tilted_uneven_ge_ct_the_mask_lands_where_the_lesion_is(ge_volume) -> None:
    volume, headers = ge_volume
    x, affine = model_input_with_affine(
        volume.array, volume.affine_lps, MODEL_INPUT, torch.device("cpu")
    )
    # a lesion where a gantry tilt of 18.5 degrees moves it by centimetres between slices
    centre, radius = np.array([10.0, 30.0, 75.0]), 14.0
    mask = sphere(tuple(x.shape[2:]), affine, centre, radius)
    frames = mask_on_source_slices(mask, affine, headers)
    assert frames.shape == (28, 512, 512)
    half_diagonal = float(np.linalg.norm(MODEL_INPUT.pixdim)) / 2
    touched = 0
    for header, frame in zip(headers, frames, strict=True):
        distance = np.linalg.norm(pixel_centres(header) - centre, axis=-1)
        assert not frame[distance > radius + half_diagonal].any(), header.InstanceNumber
        assert frame[distance < radius - half_diagonal].all(), header.InstanceNumber
        touched += bool(frame.any())
    assert touched >= 3  # slices 4 to 7 mm apart: several cross a 28 mm lesion


def test_the_key_image_is_the_slice_through_the_lesion() -> None:
    phantom, headers = lesion_ct_series("source_slices_key", seed=7)
    assert phantom.lesion is not None
    centre = (phantom.affine_lps @ np.array([*phantom.lesion.centre_voxel, 1.0]))[:3]
    (key,) = key_images(headers, centre)
    assert int(key.InstanceNumber) - 1 == round(phantom.lesion.centre_voxel[2])
    three = key_images(headers, centre, 3)
    assert three[0] is key
    distances = [slice_geometry(h).distance_to(centre) for h in three]
    assert distances == sorted(distances)
    assert len(key_images(headers, centre, 100)) == len(headers)


def test_on_the_tilted_ge_ct_the_key_image_is_the_plane_through_the_point() -> None:
    headers = series_headers(GE_TILT_UNEVEN)
    for index in (0, 13, 14, 27):  # 13 and 14 overlap: 1.1 mm apart
        centre_pixel = pixel_centres(headers[index])[256, 300]
        assert key_images(headers, centre_pixel)[0] is headers[index]
    # 200 rows down slice 20 the tilted plane is 31 mm lower: nearest by z is another slice
    g = slice_geometry(headers[20])
    point = g.position + 200 * g.pixel_spacing[0] * g.column_direction
    assert key_images(headers, point)[0] is headers[20]
    by_z = min(headers, key=lambda h: abs(float(h.ImagePositionPatient[2]) - point[2]))
    assert abs(int(by_z.InstanceNumber) - int(headers[20].InstanceNumber)) >= 3


def test_unusable_arguments_are_named() -> None:
    phantom, headers = lesion_ct_series("source_slices_errors", seed=1)
    mask = phantom.lesion_mask
    with pytest.raises(TriageError, match='"mask"'):
        mask_on_source_slices(mask[:, :, 0], phantom.affine_lps, headers)
    with pytest.raises(TriageError, match='"mask"'):
        mask_on_source_slices(mask.astype(float) * 0.5 + 0.2, phantom.affine_lps, headers)
    with pytest.raises(TriageError, match='"mask_affine_lps"'):
        mask_on_source_slices(mask, np.full((4, 4), np.nan), headers)
    with pytest.raises(TriageError, match='"mask_affine_lps"'):
        mask_on_source_slices(mask, np.zeros((4, 4)), headers)
    with pytest.raises(TriageError, match='"source_images"'):
        mask_on_source_slices(mask, phantom.affine_lps, [])
    broken = copy.deepcopy(headers)
    del broken[1].ImagePositionPatient
    with pytest.raises(TriageError, match=r'"source_images\[1\]".*ImagePositionPatient'):
        mask_on_source_slices(mask, phantom.affine_lps, broken)
    enhanced = copy.deepcopy(headers)
    enhanced[0].NumberOfFrames = 12
    with pytest.raises(TriageError, match="single-frame"):
        key_images(enhanced, (0.0, 0.0, 0.0))
    with pytest.raises(TriageError, match='"point_lps"'):
        key_images(headers, (0.0, 0.0))
    with pytest.raises(TriageError, match='"count"'):
        key_images(headers, (0.0, 0.0, 0.0), 0)
