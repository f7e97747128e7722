"""The synthetic head phantom: realistic HU, a lesion inside the brain, same seed same phantom."""

from __future__ import annotations

import time

import numpy as np
import pytest

from triage.synthetic.phantom import HEAD_SEMI_AXES_MM, head_phantom, random_grid


def test_shape_dtype_and_hu_ranges() -> None:
    phantom = head_phantom(np.random.default_rng(1), (96, 112, 24), (2.2, 2.0, 6.0), lesion=False)
    hu = phantom.hu
    assert hu.shape == (96, 112, 24) == phantom.shape
    assert hu.dtype == np.float32
    assert phantom.spacing == (2.2, 2.0, 6.0)
    assert phantom.lesion is None
    assert hu.min() >= -1024 and hu.max() <= 3071
    assert abs(float(np.median(hu[:5, :5, :])) + 1000) < 20, "corners are air"
    assert hu.max() > 600, "the skull is bone"
    centre = hu[40:56, 48:64, 10:14]
    assert 15 < float(np.median(centre)) < 45, "the middle of the head is brain"


def test_lesion_is_inside_the_brain_and_hyperdense() -> None:
    for seed in range(6):
        rng = np.random.default_rng(seed)
        phantom = head_phantom(rng, (160, 160, 36), (1.4, 1.4, 4.0), lesion=True, noise_sigma_hu=2)
        lesion = phantom.lesion
        assert lesion is not None
        assert 3.0 <= lesion.radius_mm <= 20.0
        assert 50.0 <= lesion.density_hu <= 90.0
        ijk = np.indices(phantom.shape, dtype=np.float32)
        dist_mm = np.sqrt(
            sum(((ijk[a] - lesion.centre_voxel[a]) * phantom.spacing[a]) ** 2 for a in range(3))
        )
        near = phantom.hu[dist_mm <= lesion.radius_mm * 0.8]
        assert near.size > 0, "the lesion lies within the grid"
        assert near.max() < 200, "no bone within the lesion: it is not in the skull"
        assert near.min() > -50, "no air within the lesion"
        core = phantom.hu[dist_mm <= max(lesion.radius_mm * 0.4, 1.5)]
        brain = phantom.hu[(dist_mm > lesion.radius_mm + 15) & (dist_mm < lesion.radius_mm + 25)]
        brain = brain[(brain > 15) & (brain < 45)]
        assert float(np.median(core)) > float(np.median(brain)) + 12, "the lesion is hyperdense"


def test_same_seed_same_phantom_other_seed_other_phantom() -> None:
    a = head_phantom(np.random.default_rng(7), (64, 64, 16), (3.5, 3.5, 8.0), lesion=True)
    b = head_phantom(np.random.default_rng(7), (64, 64, 16), (3.5, 3.5, 8.0), lesion=True)
    c = head_phantom(np.random.default_rng(8), (64, 64, 16), (3.5, 3.5, 8.0), lesion=True)
    assert np.array_equal(a.hu, b.hu)
    assert a.lesion == b.lesion
    assert not np.array_equal(a.hu, c.hu)


def test_physical_size_does_not_depend_on_the_grid() -> None:
    # Same seed, same field of view (228.6 x 228.6 x 150 mm), voxels 8x smaller in the fine grid.
    coarse = head_phantom(np.random.default_rng(3), (128, 128, 31), (1.8, 1.8, 5.0), lesion=False)
    fine = head_phantom(np.random.default_rng(3), (255, 255, 61), (0.9, 0.9, 2.5), lesion=False)
    vol_coarse = np.count_nonzero(coarse.hu > -500) * 1.8 * 1.8 * 5.0
    vol_fine = np.count_nonzero(fine.hu > -500) * 0.9 * 0.9 * 2.5
    assert abs(vol_coarse - vol_fine) / vol_fine < 0.03
    # Widest extent of the head in mm along each in-plane axis: about 150 (L-R) and 190 (A-P).
    for phantom in (coarse, fine):
        inside = phantom.hu > -500
        width = np.count_nonzero(inside.any(axis=(1, 2))) * phantom.spacing[0]
        length = np.count_nonzero(inside.any(axis=(0, 2))) * phantom.spacing[1]
        assert 2 * HEAD_SEMI_AXES_MM[0] * 0.85 < width < 2 * HEAD_SEMI_AXES_MM[0] * 1.15
        assert 2 * HEAD_SEMI_AXES_MM[1] * 0.85 < length < 2 * HEAD_SEMI_AXES_MM[1] * 1.15


def test_random_grid_keeps_the_head_in_the_field_of_view() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        shape, spacing = random_grid(rng)
        assert 128 <= shape[0] == shape[1] <= 256
        assert 20 <= shape[2] <= 60
        assert 200.0 - 1e-6 <= shape[0] * spacing[0] <= 250.0 + 1e-6
        assert 2.5 <= spacing[2] <= 6.0


def test_lesion_radius_can_be_fixed() -> None:
    rng = np.random.default_rng(5)
    phantom = head_phantom(rng, (128, 128, 30), (1.8, 1.8, 5.0), lesion=True, lesion_radius_mm=5.0)
    assert phantom.lesion is not None and phantom.lesion.radius_mm == 5.0


def test_bad_grid_is_rejected_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="spacing"):
        head_phantom(np.random.default_rng(0), (10, 10, 10), (1.0, 0.0, 1.0), lesion=False)


def test_fast_enough_for_training_and_tests() -> None:
    rng = np.random.default_rng(0)
    head_phantom(rng, (64, 64, 8), (3.0, 3.0, 5.0), lesion=True)  # warm up
    started = time.perf_counter()
    head_phantom(rng, (256, 256, 40), (0.9, 0.9, 5.0), lesion=True)
    assert time.perf_counter() - started < 2.0
