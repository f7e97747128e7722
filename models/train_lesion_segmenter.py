"""Train the reference lesion segmenter bundle on synthetic head-CT phantoms.

A DEMONSTRATION model: a small MONAI UNet that outlines the synthetic hyperdense lesion of
triage.synthetic.phantom. It has never seen a real CT and must not be used on patients. It is
the second
reference bundle, so that both kinds of model (classification, segmentation) run end to end.

    .venv/bin/python models/train_lesion_segmenter.py --out models/lesion_segmenter

Phantoms go through triage.analysis.preprocess.model_input, as in the pipeline; the lesion's painted
voxels (Phantom.lesion_mask) go through the same resampling to give the target mask. Training
uses random 64 x 64 x 32 crops; inference runs on the whole 96 x 96 x 32 input by sliding window
(the bundle's SlidingWindowInferer), and the validation and held-out figures are computed with
the pipeline's own code (triage.analysis.inference), so they are what the node would see. The
threshold is
chosen on the validation set for sensitivity >= --target-sensitivity, then AUROC, sensitivity,
specificity, Dice and the error of the reported lesion centre are measured held out.
"""

from __future__ import annotations

import argparse
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
from _common import FINDING, SPEC  # noqa: E402

from triage.analysis.head_ct import head_ct_rule  # noqa: E402
from triage.analysis.inference import network_output, segmentation_score  # noqa: E402
from triage.analysis.model import SegmentationScore, SlidingWindow, TriageModel  # noqa: E402
from triage.analysis.preprocess import model_input_with_affine  # noqa: E402
from triage.analysis.selection import SeriesRule  # noqa: E402
from triage.modelops.metrics import auroc, threshold_for_sensitivity  # noqa: E402
from triage.modelops.network import load_network  # noqa: E402
from triage.results import Priority  # noqa: E402

CROP = (64, 64, 32)
NETWORK_DEF: dict[str, Any] = {
    "_target_": "monai.networks.nets.UNet",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "channels": [8, 16, 32, 32],
    "strides": [2, 2, 2],
    "num_res_units": 1,
}
INFERER: dict[str, Any] = {
    "_target_": "SlidingWindowInferer",
    "roi_size": list(CROP),
    "sw_batch_size": 2,
    "overlap": 0.25,
    "mode": "gaussian",
}
#: lesion volume (mL) scored 0.5 by the "lesion_volume" rule: about three input voxels
HALF_VOLUME_ML = 0.1
VOXEL_THRESHOLD = 0.5


@dataclass
class Split:
    """Cached model inputs of one split, their target masks and what evaluation needs."""

    x: torch.Tensor  # (n, 1, X, Y, Z) float16
    mask: torch.Tensor  # (n, X, Y, Z) uint8
    y: np.ndarray  # 1 = lesion
    radius: np.ndarray  # mm, 0 without a lesion
    affine: np.ndarray  # (n, 4, 4) model input voxel -> LPS mm
    centre: np.ndarray  # (n, 3) true lesion centre, LPS mm (NaN without a lesion)


def example(args: tuple[int, int, int]) -> tuple[Any, ...]:
    """One phantom through model_input, with its lesion mask through the same resampling."""
    seed, split, index = args
    phantom = common.phantom(seed, split, index)
    cpu = torch.device("cpu")
    x, affine = model_input_with_affine(phantom.hu, phantom.affine_lps, SPEC, cpu)
    painted = phantom.lesion_mask
    soft = model_input_with_affine(
        painted.astype(np.float32) * 100.0, phantom.affine_lps, SPEC, cpu
    )
    mask = (soft[0][0, 0] >= 0.5).numpy().astype(np.uint8)
    centre = np.full(3, np.nan)
    if painted.any():
        ijk = np.argwhere(painted).mean(axis=0)
        centre = (phantom.affine_lps @ np.array([*ijk, 1.0]))[:3]
    radius = phantom.lesion.radius_mm if phantom.lesion is not None else 0.0
    return x[0].numpy().astype(np.float16), mask, float(index % 2 == 0), radius, affine, centre


def make_split(seed: int, name: str, count: int, pool: ProcessPoolExecutor | None) -> Split:
    results = common.examples(example, seed, name, count, pool)
    return Split(
        x=torch.from_numpy(np.stack([r[0] for r in results])),
        mask=torch.from_numpy(np.stack([r[1] for r in results])),
        y=np.array([r[2] for r in results]),
        radius=np.array([r[3] for r in results]),
        affine=np.stack([r[4] for r in results]),
        centre=np.stack([r[5] for r in results]),
    )


def crops(split: Split, idx: torch.Tensor, rng: np.random.Generator) -> tuple[Any, Any]:
    """Random CROP-sized windows (most of a lesion volume's windows hold the lesion), with
    random left-right flips."""
    xs, ms = [], []
    size = SPEC.spatial_size
    for i in idx.tolist():
        mask = split.mask[i]
        starts = []
        lesion_voxels = torch.nonzero(mask)
        for axis in range(3):
            room = size[axis] - CROP[axis]
            if len(lesion_voxels) and rng.random() < 0.8:
                centre = int(lesion_voxels[rng.integers(len(lesion_voxels)), axis])
                start = int(np.clip(centre - CROP[axis] // 2 + rng.integers(-8, 9), 0, room))
            else:
                start = int(rng.integers(0, room + 1))
            starts.append(start)
        window = tuple(slice(s, s + c) for s, c in zip(starts, CROP, strict=True))
        x = split.x[i, 0][window].float()
        m = mask[window].long()
        if rng.random() < 0.5:
            x, m = torch.flip(x, dims=[0]), torch.flip(m, dims=[0])
        xs.append(x[None])
        ms.append(m[None])
    return torch.stack(xs), torch.stack(ms)


def pipeline_model(out: Path) -> TriageModel:
    """The bundle as the pipeline runs it (threshold and score rule do not matter here)."""
    from pydicom.sr.coding import Code

    return TriageModel(
        name="lesion_segmenter",
        version="training",
        path=out,
        rule=SeriesRule(),
        input=SPEC,
        activation="softmax",
        output_index=1,
        finding=Code(FINDING["value"], FINDING["scheme"], FINDING["meaning"]),
        threshold=0.5,
        positive_priority=Priority.URGENT,
        task="segmentation",
        segmentation=SegmentationScore("lesion_volume", VOXEL_THRESHOLD, HALF_VOLUME_ML),
        sliding_window=SlidingWindow(
            tuple(INFERER["roi_size"]),
            INFERER["overlap"],
            INFERER["sw_batch_size"],
            INFERER["mode"],
        ),
        loader=load_network,
    )


def predict(model: TriageModel, split: Split) -> dict[str, np.ndarray]:
    """Per volume, with the pipeline's code: both score rules, Dice and the centre error."""
    cpu = torch.device("cpu")
    out: dict[str, list[float]] = {
        "max_probability": [],
        "lesion_volume": [],
        "dice": [],
        "centre_error_mm": [],
    }
    for i in range(len(split.y)):
        x = split.x[i : i + 1].float()
        raw = network_output(model, x, cpu)
        for rule in ("max_probability", "lesion_volume"):
            settings = SegmentationScore(rule, VOXEL_THRESHOLD, HALF_VOLUME_ML)
            score = segmentation_score(
                raw, tuple(x.shape[2:]), "softmax", 1, settings, split.affine[i]
            )
            out[rule].append(score.probability)
        predicted = torch.softmax(raw[0].float(), dim=0)[1] >= VOXEL_THRESHOLD
        truth = split.mask[i].bool()
        denominator = int(predicted.sum() + truth.sum())
        out["dice"].append(
            2.0 * int((predicted & truth).sum()) / denominator if denominator else 1.0
        )
        error = float("nan")
        if score.lesion_centre_lps is not None and split.y[i] == 1:
            error = float(np.linalg.norm(np.asarray(score.lesion_centre_lps) - split.centre[i]))
        out["centre_error_mm"].append(error)
    return {k: np.asarray(v) for k, v in out.items()}


def train(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    counts = common.split_counts(args)
    data = common.make_splits(make_split, args.seed, counts, args.workers)
    data_seconds = time.perf_counter() - started

    from monai.losses import DiceCELoss

    torch.set_num_threads(args.threads)
    net = common.build_network(NETWORK_DEF)
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    lesion_idx = np.flatnonzero(data["train"].y == 1)
    clear_idx = np.flatnonzero(data["train"].y == 0)
    per_epoch = len(lesion_idx) + len(lesion_idx) // 3
    steps = args.epochs * int(np.ceil(per_epoch / args.batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=steps, pct_start=0.2
    )
    # Dice on the lesion channel only: with the background in it, the loss is already half
    # satisfied by predicting no lesion anywhere
    loss_fn = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)
    gen = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    history = []
    t_train = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        net.train()
        # every lesion volume and a third as many lesion-free ones: the lesion is a few hundred
        # voxels of a volume, and without enough of it the network learns to find none
        chosen = np.concatenate(
            [lesion_idx, rng.choice(clear_idx, len(lesion_idx) // 3, replace=False)]
        )
        order = torch.from_numpy(chosen)[torch.randperm(len(chosen), generator=gen)]
        total = 0.0
        for start in range(0, len(order), args.batch_size):
            idx = order[start : start + args.batch_size]
            x, target = crops(data["train"], idx, rng)
            loss = loss_fn(net(x), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
        history.append({"epoch": epoch, "train_loss": round(total / len(order), 4)})
        print(
            f"epoch {epoch:2d}: train loss {total / len(order):.4f} "
            f"({time.perf_counter() - t_train:.0f} s)",
            flush=True,
        )
    train_seconds = time.perf_counter() - t_train
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    common.write_network(args.out, state, common.inference_config(NETWORK_DEF, INFERER))
    metrics = evaluate(pipeline_model(args.out), data["val"], data["test"], args)
    metrics.update(
        {
            "counts": counts,
            "seed": args.seed,
            "epochs": args.epochs,
            "training_history": history,
            "batch_size": args.batch_size,
            "learning_rate": args.lr,
            "crop": list(CROP),
            "parameters": sum(p.numel() for p in net.parameters()),
            **common.provenance(args, started, data_seconds, train_seconds),
        }
    )
    return metrics


def evaluate(
    model: TriageModel, val: Split, test: Split, args: argparse.Namespace
) -> dict[str, Any]:
    """The score rule with the better validation AUROC, its threshold from validation, then
    every figure held out."""
    val_pred = predict(model, val)
    rules = {rule: round(auroc(val_pred[rule], val.y), 4) for rule in SEGMENTATION_RULES}
    rule = max(SEGMENTATION_RULES, key=lambda r: (rules[r], r == "lesion_volume"))
    threshold = threshold_for_sensitivity(val_pred[rule], val.y, args.target_sensitivity)
    pred = predict(model, test)
    scores = pred[rule]
    flagged = scores >= threshold
    by_radius = common.sensitivity_by_radius(flagged, test.y, test.radius)
    positives = test.y == 1
    errors = pred["centre_error_mm"][positives & flagged]
    errors = errors[np.isfinite(errors)]
    return {
        "score_rule": rule,
        "validation_auroc_by_score_rule": rules,
        "voxel_threshold": VOXEL_THRESHOLD,
        "half_volume_ml": HALF_VOLUME_ML,
        "held_out": {
            **common.figures(scores, test.y, threshold),
            "mean_dice_lesion_volumes": round(float(pred["dice"][positives].mean()), 4),
            "median_centre_error_mm": round(float(np.median(errors)), 2) if errors.size else None,
            "sensitivity_by_lesion_radius": by_radius,
        },
        "validation": common.validation_figures(val_pred[rule], val.y, threshold),
        "threshold": round(threshold, 6),
        "threshold_rule": common.threshold_rule(args),
    }


SEGMENTATION_RULES = ("max_probability", "lesion_volume")


def write_bundle(out: Path, metrics: dict[str, Any]) -> None:
    """The bundle's docs and options (train wrote the network before evaluating it)."""
    options = triage_options(metrics)
    common.write_docs(out, metrics, metadata(metrics), options, readme(metrics))


def metadata(metrics: dict[str, Any]) -> dict[str, Any]:
    about = {
        "name": "lesion_segmenter",
        "task": "Hyperdense lesion segmentation of non-contrast head CT (demonstration)",
        "description": (
            "DEMONSTRATION MODEL, NOT A CLINICAL DEVICE. A small 3D UNet trained only on "
            "synthetic head-CT phantoms (triage.synthetic.phantom) to outline their hyperdense "
            "intraparenchymal blob. It has never seen a real CT scan, its output means nothing "
            "for a patient, and it must not be used for diagnosis or triage of real studies. "
            "It exists to exercise the segmentation path of the triage pipeline end to end."
        ),
        "label_classes": "channel 0 = background, channel 1 = synthetic hyperdense lesion",
        "pred_classes": "two logits per voxel; softmax channel 1 is the lesion probability",
    }
    dice = metrics["held_out"]["mean_dice_lesion_volumes"]
    output = {
        "pred": {
            "type": "image",
            "format": "segmentation",
            "num_channels": 2,
            "spatial_shape": list(CROP),
            "dtype": "float32",
            "value_range": [],
            "is_onehot": False,
            "channel_def": {"0": "background", "1": "hyperdense lesion (synthetic)"},
        }
    }
    inputs = common.image_input(list(CROP), is_patch_data=True)
    return common.metadata(
        metrics,
        about,
        {"held_out_mean_dice_lesion_volumes": dice},
        {"inputs": inputs, "outputs": output},
    )


def triage_options(metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "task": "segmentation",
        "series": head_ct_rule(),
        "input": SPEC.as_dict(),
        "output": {"activation": "softmax", "index": 1},
        "segmentation": {
            "score": metrics["score_rule"],
            "voxel_threshold": VOXEL_THRESHOLD,
            "half_volume_ml": HALF_VOLUME_ML,
        },
        "finding": FINDING,
        "threshold": metrics["threshold"],
        "positive_priority": "urgent",
        "first_start": "shadow",
    }


def readme(m: dict[str, Any]) -> str:
    held, val = m["held_out"], m["validation"]
    t = m["threshold"]
    radius_rows = "\n".join(
        f"| {k} | {v['count']} | {v['sensitivity']:.3f} |"
        for k, v in held["sensitivity_by_lesion_radius"].items()
        if v["sensitivity"] is not None
    )
    rule = m["score_rule"]
    sensitivity = f"{held['sensitivity']:.4f} ({held['true_positives']}/{held['positives']})"
    specificity = f"{held['specificity']:.4f} ({held['true_negatives']}/{held['negatives']})"
    centre_error = held["median_centre_error_mm"]
    rules = ", ".join(f"{k} {v:.4f}" for k, v in m["validation_auroc_by_score_rule"].items())
    rule_text = (
        f"the volume V (mL) of the lesion (the connected voxels with lesion probability >= "
        f"{m['voxel_threshold']} around the most probable voxel) gives V / (V + "
        f"{m['half_volume_ml']})"
        if rule == "lesion_volume"
        else "the highest voxel probability of the lesion channel"
    )
    return f"""# lesion_segmenter: reference segmentation model (DEMONSTRATION ONLY)

> **This is not a medical device and not a clinical model.** It was trained and tested only on
> synthetic head-CT phantoms made by `triage.synthetic.phantom`. It has never seen a real CT
> scan. Its
> output carries no meaning for real patients; never use it to diagnose or to prioritise real
> studies. It exists so that the segmentation path of the pipeline is exercised end to end.

## What it does

Given one axial head CT series, it outputs two logits per voxel; softmax channel 1 is the
probability that the voxel belongs to a synthetic hyperdense intraparenchymal lesion (the
stand-in for intracranial haemorrhage, SNOMED CT 1386000). The finding's probability is
{rule_text} (`"segmentation"` in `triage.json`, score rule `{rule}`). A study is flagged when it
is `>= {t}`. The SR reports the lesion's volume and centre (a 3D point in the patient's
coordinates).

The node registers it at first start in **shadow** mode (`"first_start": "shadow"`): it runs on
every head CT and its results are recorded, but they change no priority and reach no PACS until
an ML engineer promotes it (`triage models activate lesion_segmenter VERSION`).

## Network

`monai.networks.nets.UNet` (spatial_dims=3, in_channels=1, out_channels=2,
channels={NETWORK_DEF["channels"]}, strides={NETWORK_DEF["strides"]}, num_res_units=1);
{m["parameters"]:,} parameters, weights in `models/model.pt` (a state_dict).
`configs/inference.json` holds an `inferer`
(`SlidingWindowInferer`, roi_size {INFERER["roi_size"]}, overlap {INFERER["overlap"]},
{INFERER["mode"]} blending): the node runs it by sliding window over the whole input.

## Input

`triage.analysis.preprocess.model_input` with `triage.json` "input" (the same as the reference
classifier): RAS, block averaging, bilinear resampling to {list(SPEC.pixdim)} mm, HU window
{list(SPEC.window)} to [0, 1] with clipping, centre-cropped or zero-padded to
{list(SPEC.spatial_size)} voxels.

## Training data

Synthetic phantoms only (`triage.synthetic.phantom.head_phantom` on
`triage.synthetic.phantom.random_grid`), half of
them with one irregular lesion of 50-90 HU, radius 3-20 mm (log-uniform in training, uniform in
validation and test). The target mask is the lesion's painted voxels (`Phantom.lesion_mask`)
resampled like the image (voxels >= 0.5 inside). Splits are disjoint random streams:
{m["counts"]["train"]} train, {m["counts"]["val"]} validation (score rule and threshold),
{m["counts"]["test"]} held-out test.

## Training

Dice (lesion channel) + cross-entropy (MONAI `DiceCELoss`, batch Dice) on random
{m["crop"][0]} x {m["crop"][1]} x {m["crop"][2]} crops (80 % of crops of a lesion volume hold the
lesion), left-right flips. Each epoch sees every lesion volume and a third as many lesion-free
ones (a lesion is a few hundred voxels of a volume: without enough of it the network learns to
find none).
AdamW with a one-cycle schedule, batch size {m["batch_size"]}, {m["epochs"]} epochs; the
weights after the last epoch are shipped.

## Measured performance (held-out synthetic test set, the pipeline's own code)

| metric | value |
|---|---|
| AUROC | {held["auroc"]:.4f} |
| sensitivity at threshold {t} | {sensitivity} |
| specificity at threshold {t} | {specificity} |
| mean Dice, lesion volumes | {held["mean_dice_lesion_volumes"]:.4f} |
| median error of the reported lesion centre (flagged lesions) | {centre_error} mm |

Score rule chosen on validation AUROC ({rules}). Threshold rule:
{m["threshold_rule"]} (validation: AUROC {val["auroc"]:.4f}, sensitivity
{val["sensitivity"]:.4f}, specificity {val["specificity"]:.4f}).

Sensitivity by lesion radius (held-out):

| radius | lesions | sensitivity |
|---|---|---|
{radius_rows}

{common.produced_by(m)}
All numbers are also in `docs/metrics.json`.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = common.training_parser(
        __doc__, "models/lesion_segmenter", 20240601, 480, 100, 200, epochs=24, lr=0.003
    )
    return common.parse(parser, "models/train_lesion_segmenter.py", argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.docs_only:
        common.rewrite_readme(args.out, readme)
        return
    metrics = train(args)
    write_bundle(args.out, metrics)
    held = metrics["held_out"]
    print(
        f"held-out AUROC {held['auroc']:.4f}, sensitivity {held['sensitivity']:.4f}, "
        f"specificity {held['specificity']:.4f}, Dice {held['mean_dice_lesion_volumes']:.4f} "
        f"at threshold {metrics['threshold']} ({metrics['score_rule']}); bundle written to "
        f"{args.out}"
    )


if __name__ == "__main__":
    main()
