"""The out-of-distribution check (issue 15): the shipped bundles' references take fresh
phantoms like those the models learnt from, and mark as *uncertain* - never urgent - an input
of another body region, one with an absurd intensity scale, and pure noise."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from support.factories import lesion_ct_series
from support.paths import PROJECT_ROOT

from triage.analysis.ood import FEATURES, MIN_REFERENCE, Reference, input_statistics
from triage.analysis.preprocess import model_input
from triage.analysis.priority import priority_for
from triage.errors import ModelError
from triage.modelops.bundle import read_bundle
from triage.modelops.reference import bundle_reference
from triage.results import Priority
from triage.synthetic.phantom import head_phantom, random_grid

BUNDLES = [PROJECT_ROOT / "models" / "ich_classifier", PROJECT_ROOT / "models" / "lesion_segmenter"]
CPU = torch.device("cpu")
#: neither the training scripts (splits 0-2) nor models/make_reference.py (split 7) use it
FRESH = 424242


def abdomen_ct(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An axial abdomen CT, 350 x 260 mm: fat under the skin, liver, kidneys, spine, bowel gas."""
    shape, spacing = (256, 256, 40), (1.4, 1.4, 5.0)
    i, j = np.meshgrid(
        (np.arange(shape[0]) - shape[0] / 2) * spacing[0],
        (np.arange(shape[1]) - shape[1] / 2) * spacing[1],
        indexing="ij",
    )
    body = (i / 175) ** 2 + (j / 130) ** 2 <= 1
    inner = (i / 160) ** 2 + (j / 115) ** 2 <= 1
    plane = np.full(shape[:2], -1000.0)
    plane[body] = -100.0  # fat
    plane[inner] = 45.0  # muscle, bowel wall
    plane[((i + 60) / 80) ** 2 + ((j + 20) / 70) ** 2 <= 1] = 60.0  # liver
    for side in (-1, 1):
        plane[((i - side * 70) / 25) ** 2 + ((j - 60) / 35) ** 2 <= 1] = 30.0  # kidneys
    plane[(i / 22) ** 2 + ((j - 80) / 22) ** 2 <= 1] = 700.0  # vertebral body
    plane[((i - 40) / 30) ** 2 + ((j + 40) / 20) ** 2 <= 1] = -950.0  # bowel gas
    hu = np.repeat(plane[:, :, None], shape[2], axis=2) + rng.normal(0, 12, shape)
    return hu.astype(np.float32), np.diag([*spacing, 1.0])


def scores(folder, hu: np.ndarray, affine: np.ndarray) -> tuple[float, float]:
    spec = read_bundle(folder).options.input
    ref = bundle_reference(folder)
    assert ref is not None, f"{folder.name} ships no reference.json"
    x = model_input(hu, affine, spec, CPU)
    return ref.score(input_statistics(x, spec.pixdim)), ref.threshold


@pytest.mark.parametrize("folder", BUNDLES, ids=lambda p: p.name)
def test_fresh_phantoms_and_the_tests_lesion_studies_are_like_the_training_data(folder) -> None:
    for index in range(6):
        rng = np.random.default_rng([FRESH, index])
        shape, spacing = random_grid(rng)
        phantom = head_phantom(rng, shape, spacing, index % 2 == 0)
        score, threshold = scores(folder, phantom.hu, phantom.affine_lps)
        assert score < threshold, (index, score, threshold)
    phantom, _ = lesion_ct_series("ood", seed=3)
    score, threshold = scores(folder, phantom.hu, phantom.affine_lps)
    assert score < threshold


@pytest.mark.parametrize("folder", BUNDLES, ids=lambda p: p.name)
@pytest.mark.parametrize("kind", ["abdomen", "ten times the HU", "no rescale intercept", "noise"])
def test_an_input_unlike_the_training_data_scores_above_the_threshold(folder, kind: str) -> None:
    rng = np.random.default_rng(5)
    if kind == "abdomen":
        hu, affine = abdomen_ct(rng)
    elif kind == "noise":
        hu, affine = (
            rng.normal(0, 400, (160, 160, 30)).astype(np.float32),
            np.diag([1.5, 1.5, 5, 1]),
        )
    else:
        phantom, _ = lesion_ct_series("ood-scale", seed=1)
        hu, affine = phantom.hu, phantom.affine_lps
        # stored values read as HU: ten times too large, or 1024 too high (intercept lost)
        hu = hu * 10.0 if kind == "ten times the HU" else hu + 1024.0
    score, threshold = scores(folder, hu, affine)
    assert score > threshold, (kind, score, threshold)


def test_an_uncertain_result_is_never_urgent() -> None:
    assert priority_for(0.99, 0.5, Priority.URGENT) is Priority.URGENT
    assert priority_for(0.99, 0.5, Priority.URGENT, uncertain=True) is Priority.ROUTINE
    assert priority_for(0.1, 0.5, Priority.URGENT, uncertain=True) is Priority.ROUTINE
    assert priority_for(float("nan"), 0.5, Priority.URGENT, uncertain=True) is (
        Priority.NOT_ANALYSED
    )


def test_a_reference_round_trips_and_refuses_what_it_cannot_use() -> None:
    rng = np.random.default_rng(0)
    rows = [rng.normal(1.0, 0.1, len(FEATURES)) for _ in range(20)]
    ref = Reference.fit(rows, "test rows")
    again = Reference.from_dict(json.loads(json.dumps(ref.as_dict())))
    assert again == ref
    assert ref.score(np.asarray(ref.mean)) == pytest.approx(0.0)
    assert max(ref.score(r) for r in rows) < ref.threshold
    assert ref.score(np.full(len(FEATURES), 3.0)) > ref.threshold
    with pytest.raises(ModelError, match=f"at least {MIN_REFERENCE} studies"):
        Reference.fit(rows[: MIN_REFERENCE - 1], "too few")
    other = {**ref.as_dict(), "features": ["mean"] * len(FEATURES)}
    with pytest.raises(ModelError, match="other statistics"):
        Reference.from_dict(other)
    with pytest.raises(ModelError, match="unreadable"):
        Reference.from_dict({"mean": []})


def test_an_empty_input_has_statistics_far_from_any_head() -> None:
    x = torch.zeros((1, 1, 16, 16, 8))
    stats = input_statistics(x, (2.5, 2.5, 5.0))
    assert stats.shape == (len(FEATURES),) and not stats.any()
