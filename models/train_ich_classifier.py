"""Train the reference ICH classifier bundle on synthetic head-CT phantoms.

A DEMONSTRATION model: it learns to tell synthetic phantoms with a hyperdense blob from phantoms
without one. It has never seen a real CT and must not be used on patients.

    .venv/bin/python models/train_ich_classifier.py --out models/ich_classifier

Phantoms come from triage.synthetic.phantom and go through
triage.analysis.preprocess.model_input, the very function
the pipeline calls, so the model sees in training what it will see in production. Inputs are
computed once (in parallel worker processes) and cached in memory. The threshold is chosen on a
validation set for sensitivity >= --target-sensitivity, then AUROC, sensitivity and specificity
are measured on a separate held-out set and written to docs/metrics.json and docs/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _common as common  # noqa: E402
from _common import SPEC  # noqa: E402

from triage.analysis.head_ct import head_ct_rule  # noqa: E402
from triage.analysis.preprocess import model_input  # noqa: E402
from triage.modelops.metrics import auroc, threshold_for_sensitivity  # noqa: E402

NETWORK_DEF: dict[str, Any] = {
    "_target_": "monai.networks.nets.DenseNet",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 1,
    "init_features": 16,
    "growth_rate": 12,
    "block_config": [2, 2, 2],
    "dropout_prob": 0.0,
}
MAP_STRIDE = 4  # the resolution of DenseNet features after its first dense block


@dataclass
class Split:
    """Cached model inputs of one split: labels, lesion radii (0 without one) and lesion maps."""

    x: torch.Tensor
    y: torch.Tensor
    radius: np.ndarray
    lesion_map: torch.Tensor


def example(args: tuple[int, int, int]) -> tuple[np.ndarray, float, float, np.ndarray]:
    """One phantom through model_input: input (float16), label, lesion radius, lesion map.

    The lesion map is where the lesion lies in the model input, max-pooled by MAP_STRIDE: the
    training target of an auxiliary head that teaches early layers what a lesion looks like.
    """
    seed, split, index = args
    phantom = common.phantom(seed, split, index)
    x = model_input(phantom.hu, phantom.affine_lps, SPEC, torch.device("cpu"))
    map_shape = tuple(n // MAP_STRIDE for n in SPEC.spatial_size)
    lesion_map = np.zeros(map_shape, dtype=np.uint8)
    radius = 0.0
    if phantom.lesion is not None:
        radius = phantom.lesion.radius_mm
        sphere = _sphere(phantom.shape, phantom.spacing, phantom.lesion.centre_voxel, radius)
        where = model_input(sphere, phantom.affine_lps, SPEC, torch.device("cpu"))
        pooled = torch.nn.functional.max_pool3d(where[0], MAP_STRIDE)
        lesion_map = (pooled[0] > 0.1).numpy().astype(np.uint8)
    return x[0].numpy().astype(np.float16), float(index % 2 == 0), radius, lesion_map


def _sphere(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    centre: tuple[float, float, float],
    radius_mm: float,
) -> np.ndarray:
    """100 inside the sphere, 0 outside: windowed by SPEC it becomes a 0/1 map."""
    out = np.zeros(shape, dtype=np.float32)
    lo = [max(0, int(np.floor(c - radius_mm / s))) for c, s in zip(centre, spacing, strict=True)]
    hi = [
        min(n, int(np.ceil(c + radius_mm / s)) + 1)
        for c, s, n in zip(centre, spacing, shape, strict=True)
    ]
    axes = [((np.arange(a, b) - c) * s) for a, b, c, s in zip(lo, hi, centre, spacing, strict=True)]
    d2 = axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
    out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = np.where(d2 <= radius_mm**2, 100.0, 0.0)
    return out


def make_split(seed: int, name: str, count: int, pool: ProcessPoolExecutor | None) -> Split:
    results = common.examples(example, seed, name, count, pool)
    return Split(
        x=torch.from_numpy(np.stack([r[0] for r in results])),
        y=torch.tensor([r[1] for r in results], dtype=torch.float32),
        radius=np.array([r[2] for r in results]),
        lesion_map=torch.from_numpy(np.stack([r[3] for r in results])),
    )


def predict(net: torch.nn.Module, x: torch.Tensor, batch: int = 32) -> np.ndarray:
    net.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(x), batch):
            logits = net(x[start : start + batch].float()).reshape(-1)
            out.append(torch.sigmoid(logits).numpy())
    return np.concatenate(out)


def augment(
    x: torch.Tensor, lesion_map: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random left-right flips and in-plane shifts of whole map cells (the border is air)."""
    x = x.float()
    m = lesion_map.float()[:, None]
    flip = torch.rand(len(x), generator=gen) < 0.5
    x[flip] = torch.flip(x[flip], dims=[2])
    m[flip] = torch.flip(m[flip], dims=[2])
    cx, cy = (int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
    x = torch.roll(x, shifts=(cx * MAP_STRIDE, cy * MAP_STRIDE), dims=(2, 3))
    m = torch.roll(m, shifts=(cx, cy), dims=(2, 3))
    return x, m


class LesionMapHead(torch.nn.Module):
    """Training-only head on the first dense block: a 1x1x1 conv predicting the lesion map.

    Dense supervision (where is the lesion?) teaches the early layers far faster than the one
    label per volume does; the head is dropped from the shipped weights.
    """

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.features: dict[str, torch.Tensor] = {}
        block = net.get_submodule("features.denseblock1")
        block.register_forward_hook(lambda _m, _i, out: self.features.__setitem__("b1", out))
        with torch.no_grad():
            net.eval()
            net(torch.zeros(1, 1, *SPEC.spatial_size))
        channels = self.features["b1"].shape[1]
        self.head = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Conv3d(channels, 1, 1))

    def forward(self) -> torch.Tensor:
        return self.head(self.features["b1"])


def train(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    counts = common.split_counts(args)
    data = common.make_splits(make_split, args.seed, counts, args.workers)
    data_seconds = time.perf_counter() - started

    torch.set_num_threads(args.threads)
    net = common.build_network(NETWORK_DEF)
    lesion_head = LesionMapHead(net)
    params = [*net.parameters(), *lesion_head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * int(np.ceil(args.train / args.batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=steps, pct_start=0.2
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()
    # Lesion cells are rare (well under 1% of the map): weigh them up.
    map_loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(args.map_pos_weight))
    gen = torch.Generator().manual_seed(args.seed)
    train_set, val = data["train"], data["val"]
    history: list[dict[str, float]] = []
    t_train = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        net.train()
        order = torch.randperm(args.train, generator=gen)
        total = 0.0
        for start in range(0, args.train, args.batch_size):
            idx = order[start : start + args.batch_size]
            x, target_map = augment(train_set.x[idx], train_set.lesion_map[idx], gen)
            loss = loss_fn(net(x).reshape(-1), train_set.y[idx])
            map_loss = map_loss_fn(lesion_head(), target_map)
            optimizer.zero_grad()
            (loss + args.map_weight * map_loss).backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
        val_scores = predict(net, val.x)
        val_auc = auroc(val_scores, val.y.numpy())
        eps = 1e-6
        val_loss = float(
            -np.mean(
                val.y.numpy() * np.log(val_scores + eps)
                + (1 - val.y.numpy()) * np.log(1 - val_scores + eps)
            )
        )
        print(
            f"epoch {epoch:2d}: train loss {total / args.train:.4f}  val loss {val_loss:.4f}  "
            f"val AUROC {val_auc:.4f}  ({time.perf_counter() - t_train:.0f} s)",
            flush=True,
        )
        history.append(
            {"epoch": epoch, "val_auroc": round(val_auc, 4), "val_loss": round(val_loss, 4)}
        )
    train_seconds = time.perf_counter() - t_train
    # The weights of the last epoch are kept: the one-cycle schedule ends at a tiny learning rate,
    # and picking the epoch with the best validation AUROC proved to pick noise on 200 phantoms.
    final_state = {k: v.detach().clone() for k, v in net.state_dict().items()}

    n_params = sum(p.numel() for p in net.parameters())
    return {
        "state": final_state,
        "metrics": {
            **evaluate(net, val, data["test"], args),
            "counts": counts,
            "seed": args.seed,
            "epochs": args.epochs,
            "validation_history": history,
            "map_weight": args.map_weight,
            "batch_size": args.batch_size,
            "learning_rate": args.lr,
            "parameters": n_params,
            **common.provenance(args, started, data_seconds, train_seconds),
        },
    }


def evaluate(
    net: torch.nn.Module, val: Split, test: Split, args: argparse.Namespace
) -> dict[str, Any]:
    """Threshold from the validation set, then AUROC, sensitivity and specificity held out."""
    val_scores = predict(net, val.x)
    threshold = threshold_for_sensitivity(val_scores, val.y.numpy(), args.target_sensitivity)
    scores = predict(net, test.x)
    labels = test.y.numpy()
    by_radius = common.sensitivity_by_radius(scores >= threshold, labels, test.radius)
    return {
        "held_out": {
            **common.figures(scores, labels, threshold),
            "sensitivity_by_lesion_radius": by_radius,
        },
        "validation": common.validation_figures(val_scores, val.y.numpy(), threshold),
        "threshold": round(threshold, 6),
        "threshold_rule": common.threshold_rule(args),
    }


def rethreshold(args: argparse.Namespace) -> dict[str, Any]:
    """A new operating point for the shipped weights, measured on freshly generated
    validation and held-out sets (the same seeds as training used)."""
    metrics = json.loads((args.out / "docs" / "metrics.json").read_text(encoding="utf-8"))
    net = common.build_network(NETWORK_DEF)
    state = torch.load(args.out / "models" / "model.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    torch.set_num_threads(args.threads)
    with common.phantom_pool(args.workers) as pool:
        val = make_split(args.seed, "val", args.val, pool)
        test = make_split(args.seed, "test", args.test, pool)
    metrics.update(evaluate(net, val, test, args))
    metrics["rethreshold_command"] = args.command
    return {"state": state, "metrics": metrics}


def write_bundle(out: Path, result: dict[str, Any]) -> None:
    metrics = result["metrics"]
    common.write_network(out, result["state"], common.inference_config(NETWORK_DEF))
    options = triage_options(metrics["threshold"])
    common.write_docs(out, metrics, metadata(metrics), options, readme(metrics))


def metadata(metrics: dict[str, Any]) -> dict[str, Any]:
    about = {
        "name": "ich_classifier",
        "task": "Intracranial hemorrhage classification of non-contrast head CT (demonstration)",
        "description": (
            "DEMONSTRATION MODEL, NOT A CLINICAL DEVICE. A small 3D DenseNet trained only on "
            "synthetic head-CT phantoms (triage.synthetic.phantom) to tell phantoms with a "
            "hyperdense "
            "intraparenchymal blob from phantoms without one. It has never seen a real CT scan, "
            "its output means nothing for a patient, and it must not be used for diagnosis or "
            "triage of real studies. It exists to exercise the triage pipeline end to end."
        ),
        "label_classes": "1 = synthetic hyperdense lesion present, 0 = absent",
        "pred_classes": "one logit; sigmoid gives the probability of a lesion",
    }
    output = {
        "pred": {
            "type": "logits",
            "format": "classes",
            "num_channels": 1,
            "spatial_shape": [1],
            "dtype": "float32",
            "value_range": [],
            "is_onehot": False,
            "channel_def": {"0": "intracranial hemorrhage (synthetic)"},
        }
    }
    inputs = common.image_input(list(SPEC.spatial_size), is_patch_data=False)
    return common.metadata(metrics, about, {}, {"inputs": inputs, "outputs": output})


def triage_options(threshold: float) -> dict[str, Any]:
    return {
        "task": "classification",
        "series": head_ct_rule(),
        "input": SPEC.as_dict(),
        "output": {"activation": "sigmoid", "index": 0},
        "finding": common.FINDING,
        "threshold": threshold,
        "positive_priority": "urgent",
    }


def readme(m: dict[str, Any]) -> str:
    rethreshold_note = (
        "\nThe threshold and the figures above were then re-derived from the same weights with:"
        f"\n\n```\n{m['rethreshold_command']}\n```\n"
        if m.get("rethreshold_command")
        else ""
    )
    held = m["held_out"]
    rows = "\n".join(
        f"| {name} | {v['count']} | "
        f"{'-' if v['sensitivity'] is None else format(v['sensitivity'], '.3f')} |"
        for name, v in held["sensitivity_by_lesion_radius"].items()
    )
    net = ", ".join(f"{k}={v}" for k, v in NETWORK_DEF.items() if k != "_target_")
    fov = " x ".join(f"{p * n:g}" for p, n in zip(SPEC.pixdim, SPEC.spatial_size, strict=True))
    size = ", ".join(map(str, SPEC.spatial_size))
    tp, tn = held["true_positives"], held["true_negatives"]
    return f"""# ich_classifier: reference model (DEMONSTRATION ONLY)

> **This is not a medical device and not a clinical model.** It was trained and tested only on
> synthetic head-CT phantoms made by `triage.synthetic.phantom`. It has never seen a real CT
> scan. Its
> scores carry no meaning for real patients; never use it to diagnose or to prioritise real
> studies. It exists so that the triage pipeline can be run and tested end to end.

## What it does

Given one axial head CT series, it outputs one logit; `sigmoid(logit)` is the probability that
the volume holds a synthetic hyperdense intraparenchymal lesion (the stand-in for intracranial
haemorrhage, SNOMED CT 1386000). A study is flagged (`urgent`) when the probability is
`>= {m["threshold"]}` (the threshold in `triage.json`).

## Network

`monai.networks.nets.DenseNet` ({net}); {m["parameters"]:,} parameters, weights in
`models/model.pt` (a state_dict, loads with `torch.load(..., weights_only=True)`).

## Input

`triage.analysis.preprocess.model_input` with `triage.json` "input": voxels reoriented to RAS,
averaged in blocks of whole voxels no larger than the target voxel (anti-aliasing), resampled
(bilinear) to {list(SPEC.pixdim)} mm, HU window {list(SPEC.window)} scaled to [0, 1]
with clipping, centre-cropped or zero-padded to {list(SPEC.spatial_size)} voxels
({fov} mm). Tensor shape (1, 1, {size}), float32.

## Training data

Synthetic phantoms only (`triage.synthetic.phantom.head_phantom`): ellipsoidal head about 150 x
190 x
140 mm with scalp, a two-layer skull, subarachnoid CSF, grey/white matter with texture, basal
ganglia and ventricles, small random rotations and shifts, gaussian noise 2-8 HU and
partial-volume blur. Grids from `triage.synthetic.phantom.random_grid`: 128-256 pixels in-plane
(spacing
0.5-1.2 mm, widened so the field of view is 200-250 mm), 20-60 slices of 2.5-6 mm. Half of the
phantoms hold one irregular lesion of 50-90 HU anywhere inside the brain, radius 3-20 mm:
log-uniform in the training set (more of the small, hard lesions), uniform (the phantom's own
distribution) in the validation and test sets. Splits are disjoint random streams:
{m["counts"]["train"]} train, {m["counts"]["val"]} validation (threshold and progress),
{m["counts"]["test"]} held-out test.

## Training

Binary cross-entropy on the logit, plus (weight {m["map_weight"]}) a dense auxiliary loss: a
1x1x1 convolution on the first dense block predicts where the lesion lies (a {MAP_STRIDE}x
downsampled map of the known lesion sphere). One label per volume is too weak a signal for a
few hundred volumes; the map teaches the early layers what a lesion looks like. The auxiliary
head is used only in training and is not part of the shipped weights. Augmentation: left-right
flips and in-plane shifts. AdamW with a one-cycle schedule, batch size {m["batch_size"]},
{m["epochs"]} epochs; the weights after the last epoch are shipped (validation AUROC by epoch is
in `docs/metrics.json`).

## Measured performance (held-out synthetic test set)

| metric | value |
|---|---|
| AUROC | {held["auroc"]:.4f} |
| sensitivity at threshold {m["threshold"]} | {held["sensitivity"]:.4f} ({tp}/{held["positives"]}) |
| specificity at threshold {m["threshold"]} | {held["specificity"]:.4f} ({tn}/{held["negatives"]}) |

Threshold rule: {m["threshold_rule"]} (validation: AUROC {m["validation"]["auroc"]:.4f},
sensitivity {m["validation"]["sensitivity"]:.4f}, specificity {m["validation"]["specificity"]:.4f}).

Sensitivity by lesion radius (held-out):

| radius | lesions | sensitivity |
|---|---|---|
{rows}

{common.produced_by(m)}{rethreshold_note}
All numbers are also in `docs/metrics.json`.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = common.training_parser(
        __doc__, "models/ich_classifier", 20240501, 1200, 200, 200, epochs=14, lr=2e-3
    )
    parser.add_argument("--map-weight", type=float, default=1.0, help="lesion-map loss weight")
    parser.add_argument("--map-pos-weight", type=float, default=200.0)
    parser.add_argument(
        "--rethreshold",
        action="store_true",
        help="keep the bundle's weights; regenerate the validation and held-out sets, choose the "
        "threshold for --target-sensitivity and rewrite triage.json and the metrics",
    )
    return common.parse(parser, "models/train_ich_classifier.py", argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.docs_only:
        common.rewrite_readme(args.out, readme)
        return
    result = rethreshold(args) if args.rethreshold else train(args)
    write_bundle(args.out, result)
    held = result["metrics"]["held_out"]
    print(
        f"held-out AUROC {held['auroc']:.4f}, sensitivity {held['sensitivity']:.4f}, "
        f"specificity {held['specificity']:.4f} at threshold {result['metrics']['threshold']}; "
        f"bundle written to {args.out}"
    )


if __name__ == "__main__":
    main()
