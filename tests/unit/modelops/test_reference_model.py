"""The shipped reference bundle loads the MONAI way and separates fresh lesion phantoms."""

from __future__ import annotations

import json

import numpy as np
import torch
from monai.bundle import ConfigParser
from support.paths import PROJECT_ROOT

from triage.analysis.preprocess import InputSpec, model_input
from triage.synthetic.phantom import head_phantom, random_grid

BUNDLE = PROJECT_ROOT / "models" / "ich_classifier"
# Training draws from np.random.default_rng([seed, split, index]) with seed 20240501; this
# stream is unrelated to it.
FRESH_SEED = 987654321


def _network() -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    net: torch.nn.Module = parser.get_parsed_content("network_def", instantiate=True)
    state = torch.load(BUNDLE / "models" / "model.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return net.eval()


def _options() -> dict:
    return json.loads((BUNDLE / "triage.json").read_text(encoding="utf-8"))


def _auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (pos.size * neg.size))


def test_bundle_layout_and_options() -> None:
    for name in (
        "configs/metadata.json",
        "configs/inference.json",
        "models/model.pt",
        "triage.json",
        "docs/README.md",
        "docs/metrics.json",
    ):
        assert (BUNDLE / name).is_file(), name
    metadata = json.loads((BUNDLE / "configs" / "metadata.json").read_text(encoding="utf-8"))
    assert metadata["version"] == "1.0.0"
    assert "DEMONSTRATION" in metadata["description"]
    assert "network_data_format" in metadata
    options = _options()
    assert options["task"] == "classification"
    assert options["output"] == {"activation": "sigmoid", "index": 0}
    assert options["finding"]["value"] == "1386000"
    assert 0.0 < options["threshold"] < 1.0
    spec = InputSpec.from_dict(options["input"])
    assert (
        list(spec.spatial_size)
        == metadata["network_data_format"]["inputs"]["image"]["spatial_shape"]
    )
    metrics = json.loads((BUNDLE / "docs" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["threshold"] == options["threshold"]
    readme = (BUNDLE / "docs" / "README.md").read_text(encoding="utf-8")
    assert "not a medical device" in readme.lower()
    assert f"{metrics['held_out']['auroc']:.4f}" in readme


def test_weights_are_small() -> None:
    net = _network()
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params * 4 < 5 * 2**20
    assert (BUNDLE / "models" / "model.pt").stat().st_size < 5 * 2**20


def test_scores_fresh_lesion_phantoms_higher() -> None:
    torch.manual_seed(0)
    net = _network()
    spec = InputSpec.from_dict(_options()["input"])
    scores, labels = [], []
    for index in range(16):
        rng = np.random.default_rng([FRESH_SEED, index])
        lesion = index % 2 == 0
        shape, spacing = random_grid(rng)
        phantom = head_phantom(rng, shape, spacing, lesion)
        x = model_input(phantom.hu, phantom.affine_lps, spec, torch.device("cpu"))
        with torch.inference_mode():
            scores.append(float(torch.sigmoid(net(x).reshape(-1)[0])))
        labels.append(int(lesion))
    auc = _auroc(np.array(scores), np.array(labels))
    assert auc >= 0.85, f"AUROC {auc:.3f} on fresh phantoms; scores {np.round(scores, 3)}"
