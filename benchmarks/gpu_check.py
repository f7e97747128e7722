"""CPU against CUDA on the same studies: do the results agree, and how much faster is the GPU?

    bash benchmarks/gpu_check.sh [--studies 4] [--slices 200] [--size 512] [--cpu-studies N]
                                 [--amp float16,bfloat16] [--require-cuda] [--json PATH]

Synthetic head CTs (``--studies`` of ``--slices`` slices of ``--size`` x ``--size``, half of
them with a lesion) are written as DICOM files and assembled once, on the host, as the pipeline
does (`triage.imaging.volume`). Then every shipped model, active and shadow (``--models``,
default models/), runs on each volume what `triage.app.pipeline` runs: preprocessing
(`model_input_with_affine`), inference (`score`), the out-of-distribution score and, for a
classifier, its key point (`key_point`; here on every study, in the pipeline on positives only).
That is done on the CPU, then on CUDA in float32 (PyTorch's defaults: cuDNN may use TF32), then
on CUDA with each ``--amp`` autocast dtype (TRIAGE_AMP; inference only, the key point stays in
float32). The first study is run once first on each, untimed (warm-up).

It prints the versions and the GPU, the per-stage times (p50 over the studies) on each with the
speed-up over the CPU, and how far each CUDA run is from the CPU one: model input, probability
(the priority must be the same unless the CPU probability is within the tolerance of the
threshold), OOD score, key point. Exit status: 0 when everything agreed, or when there is no CUDA
(it says so, after the CPU part); 1 when a result disagreed; 2 with ``--require-cuda`` and no
CUDA. Nothing is downloaded. ``benchmarks/gpu_check.sh`` runs it under a 5 minute limit.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from triage.analysis.inference import AMP_DTYPES, CUDA_TOLERANCE, score  # noqa: E402
from triage.analysis.model import TriageModel  # noqa: E402
from triage.analysis.ood import input_statistics  # noqa: E402
from triage.analysis.preprocess import model_input_with_affine  # noqa: E402
from triage.analysis.priority import priority_for  # noqa: E402
from triage.analysis.saliency import key_point  # noqa: E402
from triage.imaging.volume import Volume, load_files  # noqa: E402
from triage.modelops.bundle import read_bundles  # noqa: E402
from triage.modelops.reference import bundle_reference  # noqa: E402
from triage.results import is_uncertain  # noqa: E402

#: how far a CUDA result may be from the CPU one: model input (window units, 0-1), OOD score
#: (distance units; the shipped thresholds are about 8), key point (mm: one input voxel is 2.5 mm
#: in-plane); the probability's, by precision, are the library's (`CUDA_TOLERANCE`)
TOLERANCE = {"input": 1e-4, "ood": 1e-2, "key_point_mm": 2.5}
PROBABILITY_TOLERANCE = {
    "float32": CUDA_TOLERANCE["off"],
    "float16": CUDA_TOLERANCE["float16"],
    "bfloat16": CUDA_TOLERANCE["bfloat16"],
}
STAGES = ("preprocess", "infer", "ood", "saliency")


@dataclasses.dataclass
class Run:
    """One model on one study on one device: its times (s) and what it gave."""

    times: dict[str, float]
    probability: float
    priority: str
    ood: float | None
    lesion_ml: float | None
    key_point: tuple[float, float, float] | None
    model_input: np.ndarray | None = None


def write_studies(folder: Path, args: argparse.Namespace) -> list[list[Path]]:
    """The studies' axial series as DICOM files, one folder each (phantoms made at half
    resolution and upsampled, as benchmarks/pipeline.py does: seconds, not a minute, each)."""
    from triage.synthetic.phantom import head_phantom
    from triage.synthetic.series import ct_series, write_series

    shape = (args.size, args.size, args.slices)
    spacing = (args.pixel, args.pixel, args.step)
    series = []
    for index in range(args.studies):
        rng = np.random.default_rng([args.seed, index])
        lesion = index % 2 == 0
        coarse = tuple(max(16, n // 2) for n in shape)
        coarse_spacing = tuple(s * n / c for s, n, c in zip(spacing, shape, coarse, strict=True))
        phantom = head_phantom(
            rng,
            coarse,  # type: ignore[arg-type]
            coarse_spacing,  # type: ignore[arg-type]
            lesion,
            lesion_radius_mm=float(rng.uniform(8, 15)) if lesion else None,
            noise_sigma_hu=0.0,
        )
        hu = torch.nn.functional.interpolate(
            torch.from_numpy(phantom.hu)[None, None], size=shape, mode="trilinear"
        )[0, 0].numpy()
        hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(rng.uniform(2, 8))
        uid = f"2.25.{args.seed}{index:03d}"
        datasets = ct_series(
            hu,
            spacing,
            study_instance_uid=f"{uid}1",
            series_instance_uid=f"{uid}2",
            patient_id=f"GPU-{index + 1:03d}",
            patient_name="Gpu^Check",
            accession_number="",
            study_description="CT HEAD WITHOUT CONTRAST",
            series_description="Head 0.8mm",
            series_number=2,
            study_date="20250101",
            study_time="120000",
        )
        series.append(write_series(datasets, folder / f"study-{index + 1}"))
    return series


def shipped_models(folder: Path) -> list[TriageModel]:
    """Every bundle in the folder in the role it starts in, with its OOD reference."""
    return [
        dataclasses.replace(b.model(b.options.first_start), reference=bundle_reference(b.path))
        for b in read_bundles(folder)
    ]


def run_model(
    model: TriageModel,
    volume: Volume,
    device: torch.device,
    amp: torch.dtype | None,
    saliency: bool,
) -> Run:
    """What the pipeline does with one model on one volume, each stage timed to its end."""

    def synced() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    t0 = synced()
    x, affine = model_input_with_affine(volume.array, volume.affine_lps, model.input, device)
    t1 = synced()
    verdict = score(model, x, affine, device, amp)
    t2 = synced()
    ood = None
    if model.reference is not None:
        ood = model.reference.score(input_statistics(x, model.input.pixdim))
    t3 = synced()
    point = None
    if saliency and model.task == "classification":
        point = key_point(model, x, affine, device).point_lps
    t4 = synced()
    threshold = model.reference.threshold if model.reference is not None else None
    priority = priority_for(
        verdict.probability,
        model.threshold,
        model.positive_priority,
        uncertain=is_uncertain(ood, threshold),
    )
    times = {"preprocess": t1 - t0, "infer": t2 - t1, "ood": t3 - t2}
    if point is not None:
        times["saliency"] = t4 - t3
    return Run(
        times,
        verdict.probability,
        priority.value,
        ood,
        verdict.lesion_volume_ml,
        point,
        x.detach().cpu().numpy(),  # after the clock: for the comparison only
    )


def run_all(
    models: list[TriageModel],
    volumes: list[Volume],
    device: torch.device,
    amp: torch.dtype | None,
    saliency: bool,
    cpu_runs: dict[str, list[Run]] | None,
) -> tuple[dict[str, list[Run]], dict[str, dict[str, float]]]:
    """Every model on every volume after one untimed warm-up on the first; with ``cpu_runs``
    also how far each result is from the CPU's (the largest difference per quantity)."""
    runs: dict[str, list[Run]] = {m.name: [] for m in models}
    worst: dict[str, dict[str, float]] = {}
    for model in models:
        run_model(model, volumes[0], device, amp, saliency)
        worst[model.name] = {"near_threshold": 0.0}
        for index, volume in enumerate(volumes):
            run = run_model(model, volume, device, amp, saliency)
            runs[model.name].append(run)
            if cpu_runs is None or index >= len(cpu_runs[model.name]):
                continue
            ref = cpu_runs[model.name][index]
            if run.model_input is not None and ref.model_input is not None:
                gap = float(np.abs(run.model_input - ref.model_input).max())
                _worse(worst[model.name], "input", gap)
            _worse(worst[model.name], "probability", abs(run.probability - ref.probability))
            if run.ood is not None and ref.ood is not None:
                _worse(worst[model.name], "ood", abs(run.ood - ref.ood))
            if run.key_point is not None and ref.key_point is not None:
                mm = float(np.linalg.norm(np.subtract(run.key_point, ref.key_point)))
                _worse(worst[model.name], "key_point_mm", mm)
            if run.lesion_ml is not None and ref.lesion_ml is not None:
                _worse(worst[model.name], "lesion_ml", abs(run.lesion_ml - ref.lesion_ml))
            if run.priority != ref.priority:
                near = abs(ref.probability - model.threshold) <= _p_tolerance(amp)
                if ref.ood is not None and model.reference is not None:
                    near |= abs(ref.ood - model.reference.threshold) <= TOLERANCE["ood"]
                key = "near_threshold" if near else "priority_changed"
                worst[model.name][key] = worst[model.name].get(key, 0.0) + 1
    return runs, worst


def _worse(worst: dict[str, float], key: str, value: float) -> None:
    worst[key] = max(worst.get(key, 0.0), value)


def _p_tolerance(amp: torch.dtype | None) -> float:
    return PROBABILITY_TOLERANCE[_precision_name(amp)]


def _precision_name(amp: torch.dtype | None) -> str:
    return next((k for k, v in AMP_DTYPES.items() if v == amp and v is not None), "float32")


def failures(worst: dict[str, float], amp: torch.dtype | None) -> list[str]:
    """What is beyond its tolerance, in words."""
    limits = {**TOLERANCE, "probability": _p_tolerance(amp)}
    out = [
        f"|d {key}| {worst[key]:.2e} > {limit:g}"
        for key, limit in limits.items()
        if worst.get(key, 0.0) > limit
    ]
    if worst.get("priority_changed"):
        out.append(f"priority changed on {int(worst['priority_changed'])} study(ies)")
    return out


def p50(runs: list[Run], stage: str) -> float | None:
    values = [r.times[stage] for r in runs if stage in r.times]
    return statistics.median(values) if values else None


def environment(device: torch.device | None) -> dict[str, Any]:
    import monai

    info: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
    }
    if device is not None:
        props = torch.cuda.get_device_properties(device)
        info |= {
            "gpu": torch.cuda.get_device_name(device),
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "compute_capability": f"{props.major}.{props.minor}",
            "cudnn": torch.backends.cudnn.version(),
            "cudnn_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        }
    return info


def print_times(models: list[TriageModel], columns: dict[str, dict[str, list[Run]]]) -> None:
    """The p50 of each stage per column and its speed-up over the first (the CPU); the total
    adds the stages every column ran (the AMP passes leave the key point out)."""
    names, partial = list(columns), False
    print("\nper-stage time, p50 over the studies (s); (x): speed-up over the CPU")
    print(f"  {'stage':<11}{'model':<18}" + "".join(f"{n:>22}" for n in names))
    for model in models:
        table = {n: {s: p50(columns[n][model.name], s) for s in STAGES} for n in names}
        common = [s for s in STAGES if all(table[n][s] is not None for n in names)]
        ran = [s for s in STAGES if any(table[n][s] is not None for n in names)]
        partial |= common != ran
        for n in names:
            table[n]["total"] = sum(table[n][s] or 0.0 for s in common)
        for stage in (*STAGES, "total"):
            if all(table[n][stage] is None for n in names):
                continue
            base = table[names[0]][stage]
            cells = []
            for n in names:
                value = table[n][stage]
                if value is None:
                    cells.append(f"{'-':>22}")
                    continue
                ratio = f" ({base / value:5.1f}x)" if n != names[0] and base and value else ""
                cells.append(f"{value:>12.4f}{ratio:>10}")
            label = "total*" if stage == "total" and common != ran else stage
            print(f"  {label:<11}{model.name:<18}" + "".join(cells))
    if partial:
        print("  total*: the stages every column ran (the AMP passes leave the key point out)")


def print_agreement(checks: dict[str, dict[str, dict[str, float]]], studies: int) -> None:
    print(f"\nagreement with the CPU over {studies} studies (largest difference)")
    for label, per_model in checks.items():
        name = label.split()[-1] if label.split()[-1] in AMP_DTYPES else "float32"
        for model_name, w in per_model.items():
            parts = [f"{k} {v:.2e}" for k, v in w.items() if k != "near_threshold"]
            near = int(w["near_threshold"])
            note = f", {near} near the threshold" if near else ""
            verdict = "FAIL" if failures(w, AMP_DTYPES.get(name)) else "ok"
            tol = PROBABILITY_TOLERANCE[name]
            print(f"  {verdict:<5}{label:<15}{model_name:<18}{', '.join(parts)}", end="")
            print(f" (|dp| <= {tol:g}{note})")
    limits = [f"{k} {v:g}" for k, v in TOLERANCE.items()]
    limits += [f"probability {k} {v:g}" for k, v in PROBABILITY_TOLERANCE.items()]
    print("tolerances: " + ", ".join(limits))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=4)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--pixel", type=float, default=0.45, help="pixel spacing in mm")
    parser.add_argument("--step", type=float, default=0.8, help="slice step in mm")
    parser.add_argument("--cpu-studies", type=int, help="run the CPU on the first N only")
    parser.add_argument("--amp", default="float16,bfloat16", help='CUDA autocast passes ("": none)')
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--require-cuda", action="store_true", help="exit 2 without CUDA")
    parser.add_argument(
        "--device",
        default="cuda",
        help='the device compared with the CPU (default cuda; "cpu" tries the comparison '
        "itself on a machine without a GPU)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    amps = [a.strip() for a in args.amp.split(",") if a.strip()]
    for a in amps:
        if AMP_DTYPES.get(a) is None:
            parser.error(f"--amp {a}: use float16 and/or bfloat16")
    target = torch.device(args.device)
    cuda = target if target.type == "cuda" and torch.cuda.is_available() else None
    env = environment(cuda)
    print("  ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    compared = cuda if cuda is not None else (target if target.type == "cpu" else None)
    if cuda is None:
        what = "the CPU against itself (a dry run of the comparison)" if compared else "nothing"
        print(
            f"CUDA: NOT AVAILABLE (torch {torch.__version__}, CUDA build {torch.version.cuda}): "
            f"the CPU part runs; compared: {what}",
            flush=True,
        )
        if args.require_cuda:
            return 2
    models = shipped_models(args.models)
    print("models: " + ", ".join(f"{m.name} {m.version} ({m.role}, {m.task})" for m in models))
    with tempfile.TemporaryDirectory(prefix="triage-gpu-check-") as tmp:
        t = time.perf_counter()
        series = write_studies(Path(tmp), args)
        print(
            f"{len(series)} studies of {args.slices} x {args.size}^2 written in "
            f"{time.perf_counter() - t:.1f} s",
            flush=True,
        )
        volumes, assemble = [], []
        for paths in series:
            t = time.perf_counter()
            volumes.append(load_files(paths))
            assemble.append(time.perf_counter() - t)
    print(f"assemble (host, the same for every device): p50 {statistics.median(assemble):.3f} s")
    cpu_count = min(args.cpu_studies or len(volumes), len(volumes))
    cpu = torch.device("cpu")
    t = time.perf_counter()
    cpu_runs, _ = run_all(models, volumes[:cpu_count], cpu, None, True, None)
    print(f"cpu: {cpu_count} studies in {time.perf_counter() - t:.1f} s", flush=True)
    columns = {"cpu": cpu_runs}
    checks: dict[str, dict[str, dict[str, float]]] = {}
    failed = []
    if compared is not None:
        if cuda is not None:
            torch.cuda.reset_peak_memory_stats(cuda)
        for name in ["float32", *amps]:
            amp = AMP_DTYPES.get(name)
            t = time.perf_counter()
            runs, worst = run_all(models, volumes, compared, amp, amp is None, cpu_runs)
            device_label = "cuda" if cuda is not None else "cpu again"
            label = device_label if amp is None else f"{device_label} {name}"
            print(f"{label}: {len(volumes)} studies in {time.perf_counter() - t:.1f} s", flush=True)
            columns[label], checks[label] = runs, worst
            failed += [f"{label} {m}: {f}" for m, w in worst.items() for f in failures(w, amp)]
        if cuda is not None:
            peak = torch.cuda.max_memory_allocated(cuda) / 2**30
            env["gpu_peak_memory_gib"] = round(peak, 2)
    print_times(models, columns)
    if compared is None:
        print("\nCUDA is not available here: no CPU/CUDA comparison and no speed-up (exit 0)")
    else:
        print_agreement(checks, cpu_count)
    result = {
        "environment": env,
        "args": {k: str(v) for k, v in vars(args).items()},
        "assemble_p50_s": statistics.median(assemble),
        "p50_s": {
            label: {m: {s: p50(r, s) for s in STAGES} for m, r in runs.items()}
            for label, runs in columns.items()
        },
        "agreement": checks,
        "failures": failed,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"figures written to {args.json}")
    if failed:
        print("DISAGREEMENT:\n  " + "\n  ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
