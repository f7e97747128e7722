"""A segmentation model's verdict keeps its lesion mask and grid, and the shipped
lesion_segmenter's mask lands on the synthetic lesion of the source slices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.factories import lesion_ct_series
from support.paths import PROJECT_ROOT

from triage.analysis.inference import score, segmentation_score
from triage.analysis.model import SegmentationScore
from triage.analysis.preprocess import model_input_with_affine
from triage.analysis.source_slices import mask_on_source_slices
from triage.modelops.bundle import read_bundle

CPU = torch.device("cpu")


def test_the_mask_is_the_region_around_the_peak_on_the_input_grid() -> None:
    logits = torch.full((1, 2, 20, 20, 10), -5.0)
    logits[0, 0] = 0.0  # background
    logits[0, 1, 4:8, 5:9, 2:5] = 5.0  # the lesion
    logits[0, 1, 6, 6, 3] = 6.0  # its most probable voxel
    logits[0, 1, 15:18, 15:18, 7:9] = 5.0  # another blob, not connected
    affine = np.diag([2.0, 2.0, 5.0, 1.0])
    affine[:3, 3] = (-20.0, -20.0, -25.0)
    rule = SegmentationScore(score="max_probability", voxel_threshold=0.5, half_volume_ml=1.0)
    verdict = segmentation_score(logits, (20, 20, 10), "softmax", 1, rule, affine)
    expected = np.zeros((20, 20, 10), dtype=bool)
    expected[4:8, 5:9, 2:5] = True
    assert verdict.lesion_mask is not None and verdict.lesion_mask.dtype == np.bool_
    np.testing.assert_array_equal(verdict.lesion_mask, expected)
    assert verdict.mask_affine_lps is not None
    np.testing.assert_array_equal(verdict.mask_affine_lps, affine)
    affine[0, 0] = 99.0  # the verdict keeps its own copy
    assert verdict.mask_affine_lps[0, 0] == 2.0
    # the existing fields mean what they meant
    assert verdict.lesion_volume_ml == pytest.approx(expected.sum() * 20.0 / 1000.0)
    centre = np.diag([2.0, 2.0, 5.0]) @ np.argwhere(expected).mean(axis=0) + (-20, -20, -25)
    np.testing.assert_allclose(verdict.lesion_centre_lps, centre)


def test_no_lesion_gives_an_empty_mask() -> None:
    logits = torch.full((1, 2, 8, 8, 4), -5.0)
    logits[0, 0] = 0.0  # background everywhere
    rule = SegmentationScore(score="lesion_volume", voxel_threshold=0.5, half_volume_ml=1.0)
    verdict = segmentation_score(logits, (8, 8, 4), "softmax", 1, rule, np.eye(4))
    assert verdict.lesion_mask is not None and not verdict.lesion_mask.any()
    assert verdict.lesion_volume_ml == 0.0 and verdict.lesion_centre_lps is None


def test_the_shipped_segmenter_mask_lands_on_the_lesion_of_the_source_slices() -> None:
    model = read_bundle(PROJECT_ROOT / "models" / "lesion_segmenter").model()
    phantom, headers = lesion_ct_series(
        "lesion_mask", seed=11, shape=(160, 160, 24), spacing=(1.2, 1.2, 5.0)
    )
    x, affine = model_input_with_affine(phantom.hu, phantom.affine_lps, model.input, CPU)
    verdict = score(model, x, affine, CPU)
    assert verdict.probability >= model.threshold
    assert verdict.lesion_mask is not None and verdict.mask_affine_lps is not None
    assert verdict.lesion_mask.shape == tuple(x.shape[2:])
    frames = mask_on_source_slices(verdict.lesion_mask, verdict.mask_affine_lps, headers)
    truth = np.stack([phantom.lesion_mask[:, :, k].T for k in range(len(headers))])
    dice = 2 * (frames & truth).sum() / (frames.sum() + truth.sum())
    assert dice >= 0.6, f"Dice {dice:.2f} of the mask on the source slices"


def test_without_an_affine_the_mask_has_no_place() -> None:
    model = read_bundle(PROJECT_ROOT / "models" / "lesion_segmenter").model()
    verdict = score(model, torch.zeros((1, 1, 96, 96, 32)), None, CPU)
    assert verdict.lesion_mask is not None and verdict.mask_affine_lps is None
