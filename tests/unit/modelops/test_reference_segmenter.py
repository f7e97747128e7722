"""The shipped segmentation bundle: MONAI layout, small weights, and on fresh phantoms it finds
the lesion where it is (run the way the node runs it: sliding window, the pipeline's scoring)."""

from __future__ import annotations

import json

import numpy as np
import torch
from support.paths import PROJECT_ROOT

from triage.analysis.inference import score
from triage.analysis.preprocess import model_input_with_affine
from triage.modelops.bundle import read_bundle
from triage.modelops.metrics import auroc
from triage.synthetic.phantom import head_phantom, random_grid

BUNDLE = PROJECT_ROOT / "models" / "lesion_segmenter"
# Training draws from np.random.default_rng([seed, split, index]) with seed 20240601
FRESH_SEED = 13572468


def test_bundle_layout_options_and_docs() -> None:
    for name in ("configs/metadata.json", "configs/inference.json", "models/model.pt"):
        assert (BUNDLE / name).is_file(), name
    bundle = read_bundle(BUNDLE)
    assert bundle.options.task == "segmentation"
    assert bundle.options.first_start == "shadow"
    model = bundle.model()
    assert model.sliding_window is not None  # from the bundle's own SlidingWindowInferer
    assert (BUNDLE / "models" / "model.pt").stat().st_size < 1024 * 1024
    metrics = json.loads((BUNDLE / "docs" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["threshold"] == bundle.options.threshold
    readme = (BUNDLE / "docs" / "README.md").read_text(encoding="utf-8")
    assert "not a medical device" in readme.lower()
    assert f"{metrics['held_out']['auroc']:.4f}" in readme
    assert metrics["command"] in readme


def test_finds_fresh_lesions_where_they_are() -> None:
    model = read_bundle(BUNDLE).model()
    cpu = torch.device("cpu")
    scores, labels, errors = [], [], []
    for index in range(8):
        rng = np.random.default_rng([FRESH_SEED, index])
        lesion = index % 2 == 0
        shape, spacing = random_grid(rng)
        phantom = head_phantom(rng, shape, spacing, lesion, lesion_radius_mm=12.0)
        x, affine = model_input_with_affine(phantom.hu, phantom.affine_lps, model.input, cpu)
        verdict = score(model, x, affine, cpu)
        scores.append(verdict.probability)
        labels.append(int(lesion))
        if lesion:
            ijk = np.argwhere(phantom.lesion_mask).mean(axis=0)
            truth = (phantom.affine_lps @ np.array([*ijk, 1.0]))[:3]
            assert verdict.lesion_centre_lps is not None
            errors.append(float(np.linalg.norm(np.asarray(verdict.lesion_centre_lps) - truth)))
            assert verdict.lesion_volume_ml is not None and verdict.lesion_volume_ml > 1.0
    assert auroc(scores, labels) >= 0.9, f"scores {np.round(scores, 3)}"
    assert max(errors) < 5.0, f"lesion centre errors (mm): {np.round(errors, 1)}"
