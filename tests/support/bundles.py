"""MONAI bundles in the model-zoo layout, built from MONAI's own networks with random weights.

A bundle written here holds only what a zoo bundle holds (configs/metadata.json,
configs/inference.json or .yaml, models/model.pt, docs/README.md); the triage options go in a
separate file, as an ML engineer would write them.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import torch
import yaml
from monai.bundle import ConfigParser

#: A DenseNet121 small enough for tests (64 x 64 x 32 is the smallest input it takes)
DENSENET121: dict[str, Any] = {
    "_target_": "monai.networks.nets.DenseNet121",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "init_features": 8,
    "growth_rate": 4,
}
UNET: dict[str, Any] = {
    "_target_": "monai.networks.nets.UNet",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "channels": [4, 8, 16],
    "strides": [2, 2],
    "num_res_units": 0,
}
SEGRESNET: dict[str, Any] = {
    "_target_": "monai.networks.nets.SegResNet",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "init_filters": 8,
    "blocks_down": [1, 1],
    "blocks_up": [1],
}
ICH = {"value": "1386000", "scheme": "SCT", "meaning": "Intracranial hemorrhage"}


def network(network_def: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    parser = ConfigParser({"network_def": json.loads(json.dumps(network_def))})
    net: torch.nn.Module = parser.get_parsed_content("network_def", instantiate=True)
    return net


def zoo_bundle(
    root: Path,
    name: str,
    network_def: dict[str, Any],
    *,
    spatial_shape: list[int],
    out_channels: int = 2,
    task: str = "classification",
    inferer: dict[str, Any] | None = None,
    config_format: str = "json",
    weights_of: dict[str, Any] | None = None,
    seed: int = 0,
) -> Path:
    """A bundle folder as the model zoo lays it out; weights of ``weights_of`` (another
    network) when given, none when it is an empty dict."""
    folder = root / name
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "docs").mkdir()
    config: dict[str, Any] = {
        "imports": ["$import torch"],
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "network_def": network_def,
        "network": "$@network_def.to(@device)",
    }
    if inferer is not None:
        config["inferer"] = inferer
    if config_format == "yaml":
        (folder / "configs" / "inference.yaml").write_text(yaml.safe_dump(config))
    else:
        (folder / "configs" / "inference.json").write_text(json.dumps(config, indent=2))
    kind = "segmentation" if task == "segmentation" else "classes"
    metadata = {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/"
        "0.8.1/meta_schema_20220324.json",
        "version": "0.1.0",
        "changelog": {"0.1.0": "random weights, for tests"},
        "monai_version": "1.4.0",
        "pytorch_version": "2.4.0",
        "numpy_version": "1.26.0",
        "name": f"Test {name}",
        "task": f"test {task}",
        "description": "random weights",
        "authors": "tests",
        "copyright": "none",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield",
                    "modality": "CT",
                    "num_channels": 1,
                    "spatial_shape": spatial_shape,
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": inferer is not None,
                    "channel_def": {"0": "image"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image" if task == "segmentation" else "probabilities",
                    "format": kind,
                    "num_channels": out_channels,
                    "spatial_shape": spatial_shape if task == "segmentation" else [out_channels],
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_onehot": True,
                    "channel_def": {"0": "background", "1": "lesion"},
                }
            },
        },
    }
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2))
    (folder / "docs" / "README.md").write_text(f"# {name}\n\nRandom weights, for tests.\n")
    if weights_of != {}:
        net = network(weights_of or network_def, seed)
        torch.save(net.state_dict(), folder / "models" / "model.pt")
    return folder


def options(
    task: str = "classification",
    *,
    spatial_size: list[int],
    threshold: float = 0.5,
    **extra: Any,
) -> dict[str, Any]:
    """Triage options for a head-CT model of the tests (written beside, never into, a bundle)."""
    out: dict[str, Any] = {
        "task": task,
        "series": {"modality": ["CT"], "min_slices": 8},
        "input": {"pixdim": [4.0, 4.0, 5.0], "spatial_size": spatial_size, "window": [0, 100]},
        "output": {"activation": "softmax", "index": 1},
        "finding": ICH,
        "threshold": threshold,
        "positive_priority": "urgent",
    }
    out.update(extra)
    return out


def write_options(path: Path, data: dict[str, Any]) -> Path:
    if path.suffix in (".yaml", ".yml"):
        path.write_text(yaml.safe_dump(data))
    else:
        path.write_text(json.dumps(data, indent=2))
    return path


def zip_bundle(folder: Path, target: Path) -> Path:
    """The bundle folder as a zip with one top folder, as the model zoo distributes them."""
    with zipfile.ZipFile(target, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")
    return target


def classifier_bundle(root: Path, name: str = "zoo_classifier", **kw: Any) -> Path:
    return zoo_bundle(root, name, DENSENET121, spatial_shape=[64, 64, 32], **kw)


def segmenter_bundle(root: Path, name: str = "zoo_segmenter", **kw: Any) -> Path:
    inferer = {
        "_target_": "SlidingWindowInferer",
        "roi_size": [32, 32, 16],
        "sw_batch_size": 2,
        "overlap": 0.25,
    }
    kw.setdefault("inferer", inferer)
    return zoo_bundle(root, name, UNET, spatial_shape=[32, 32, 16], task="segmentation", **kw)
