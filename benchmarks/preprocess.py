"""Preprocessing on the CPU: block averaging where the volume lies vs reorienting it first.

    .venv/bin/python benchmarks/preprocess.py [--slices 200] [--size 512] [--repeats 5]

One volume as volume assembly gives it (a [column, row, slice] view of decoded 512 x 512
float32 slices, 0.45 mm pixels, 0.8 mm steps, LPS axial), through `model_input_with_affine`
to the shipped models' input (2.5 x 2.5 x 5 mm, 96 x 96 x 32). Two paths, interleaved, in one
run: **lying** (the pipeline's CPU path: `_ras_blocks_on_host`, blocks averaged over the
volume as it lies in memory) and **reoriented first** (the device path run on the CPU: the
whole volume copied to a contiguous array, reoriented, then averaged: what the CPU did
before). Prints the medians, the ratio and the largest difference between the two inputs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from triage.analysis import preprocess  # noqa: E402
from triage.analysis.preprocess import InputSpec, model_input_with_affine  # noqa: E402

SPEC = InputSpec(pixdim=(2.5, 2.5, 5.0), spatial_size=(96, 96, 32), window=(-20.0, 180.0))
CPU = torch.device("cpu")


def reoriented_first(hu: np.ndarray, affine: np.ndarray) -> torch.Tensor:
    """The path before: no block averaging where the volume lies."""
    real = preprocess._ras_blocks_on_host
    preprocess._ras_blocks_on_host = lambda *a: None  # type: ignore[assignment]
    try:
        return model_input_with_affine(hu, affine, SPEC, CPU)[0]
    finally:
        preprocess._ras_blocks_on_host = real


def lying(hu: np.ndarray, affine: np.ndarray) -> torch.Tensor:
    return model_input_with_affine(hu, affine, SPEC, CPU)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(3)
    slices = rng.normal(40.0, 20.0, (args.slices, args.size, args.size)).astype(np.float32)
    hu = slices.transpose(2, 1, 0)
    pixel = 230.0 / args.size
    affine = np.array(
        [[pixel, 0, 0, -115.0], [0, pixel, 0, -115.0], [0, 0, 0.8, 0.0], [0, 0, 0, 1.0]]
    )
    paths: dict[str, Any] = {"lying": lying, "reoriented first": reoriented_first}
    times: dict[str, list[float]] = {name: [] for name in paths}
    outputs = {name: run(hu, affine) for name, run in paths.items()}  # warm-up
    for repeat in range(args.repeats):
        names = list(paths)[repeat % 2 :] + list(paths)[: repeat % 2]
        for name in names:
            t0 = time.perf_counter()
            paths[name](hu, affine)
            times[name].append(time.perf_counter() - t0)
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
        f"{os.getloadavg()[0]:.2f}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"{args.slices} x {args.size} x {args.size} float32"
    )
    for name, values in times.items():
        runs = [round(v, 3) for v in values]
        print(f"  {name}: median {statistics.median(values):.3f} s  runs {runs}")
    ratio = statistics.median(times["reoriented first"]) / statistics.median(times["lying"])
    worst = float((outputs["lying"] - outputs["reoriented first"]).abs().max())
    print(f"  reoriented first / lying: {ratio:.2f}x; largest input difference {worst:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
