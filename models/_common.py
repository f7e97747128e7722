"""What the two training scripts (train_ich_classifier.py, train_lesion_segmenter.py) share.

Both reference models see the same input, learn from the same synthetic phantoms and ship the
same kind of MONAI bundle, so the parts that must agree between them live here once: the input
spec, the split seeds and phantom draws, the parallel generation, the options every run has, the
provenance recorded in docs/metrics.json and the files of a bundle. What makes each model itself
(its network, its cached inputs, its training loop and its README text) stays in its script.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from triage.analysis.preprocess import InputSpec
from triage.modelops.metrics import auroc, operating_point
from triage.synthetic.phantom import Phantom, head_phantom, random_grid

#: the input of both models: they run on the same preprocessed head CT
SPEC = InputSpec(pixdim=(2.5, 2.5, 5.0), spatial_size=(96, 96, 32), window=(0.0, 100.0))
#: the second seed of each split's random streams: disjoint phantoms for train, val and test
SPLITS = {"train": 0, "val": 1, "test": 2}
#: lesion radii (mm) the held-out sensitivity is broken down by
RADIUS_BINS = ((3.0, 6.0), (6.0, 10.0), (10.0, 20.0))
FINDING = {"value": "1386000", "scheme": "SCT", "meaning": "Intracranial hemorrhage"}
#: a section of docs/README.md written by hand after training, kept when the README is rewritten
KEPT_SECTION = "## On real head CT"

T = TypeVar("T")
S = TypeVar("S")


def phantom(seed: int, split: int, index: int) -> Phantom:
    """Phantom `index` of a split: every other one holds a lesion.

    The random stream is `default_rng([seed, split, index])` and it is drawn from in this order
    (grid, training radius, phantom), so a seed gives the same phantoms in both scripts and in
    every run, whichever worker makes them. Training sees more small lesions (log-uniform
    radius, 3-20 mm): they are the hard ones. Validation and test keep the phantom's own
    distribution (uniform 3-20 mm).
    """
    torch.set_num_threads(1)  # one thread per worker process: the workers are the parallelism
    rng = np.random.default_rng([seed, split, index])
    lesion = index % 2 == 0
    shape, spacing = random_grid(rng)
    radius_mm = float(np.exp(rng.uniform(np.log(3.0), np.log(20.0)))) if split == 0 else None
    return head_phantom(rng, shape, spacing, lesion, lesion_radius_mm=radius_mm)


@contextmanager
def phantom_pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """Worker processes for generating phantoms, or None (generate in this process) for one.

    Spawned, not forked: forking a process that has imported torch can hang.
    """
    if workers <= 1:
        yield None
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield pool


def examples(
    example: Callable[[tuple[int, int, int]], T],
    seed: int,
    name: str,
    count: int,
    pool: ProcessPoolExecutor | None,
) -> list[T]:
    """`example((seed, split, index))` for the first `count` phantoms of split `name`, in order.

    `example` must be a module-level function of the script so that spawned workers can find it.
    """
    jobs = [(seed, SPLITS[name], i) for i in range(count)]
    return list(pool.map(example, jobs, chunksize=8)) if pool else [example(j) for j in jobs]


def make_splits(
    make_split: Callable[[int, str, int, ProcessPoolExecutor | None], S],
    seed: int,
    counts: dict[str, int],
    workers: int,
) -> dict[str, S]:
    """Every split of `counts` made by the script's `make_split`, computed once and cached in
    memory (inputs are far cheaper to keep than to recompute each epoch)."""
    data = {}
    with phantom_pool(workers) as pool:
        for name, count in counts.items():
            t0 = time.perf_counter()
            data[name] = make_split(seed, name, count, pool)
            print(f"{name}: {count} phantoms in {time.perf_counter() - t0:.1f} s", flush=True)
    return data


def split_counts(args: argparse.Namespace) -> dict[str, int]:
    return {"train": args.train, "val": args.val, "test": args.test}


def sensitivity_by_radius(
    flagged: np.ndarray, labels: np.ndarray, radius: np.ndarray
) -> dict[str, dict[str, Any]]:
    """Per RADIUS_BINS bin: how many lesions, and the share of them flagged (None if none)."""
    out = {}
    for lo, hi in RADIUS_BINS:
        sel = (labels == 1) & (radius >= lo) & (radius < hi + 1e-9)
        out[f"{lo:g}-{hi:g} mm"] = {
            "count": int(sel.sum()),
            "sensitivity": float(flagged[sel].mean()) if sel.any() else None,
        }
    return out


def figures(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, Any]:
    """AUROC and the operating point at `threshold` (scores at or above it are flagged), as
    docs/metrics.json records them, with the library's metrics (triage.modelops.metrics) that
    `triage models evaluate` uses too."""
    point = operating_point(scores, labels, threshold)
    return {
        "auroc": round(auroc(scores, labels), 4),
        "sensitivity": round(point.sensitivity, 4),
        "specificity": round(point.specificity, 4),
        "positives": point.true_positives + point.false_negatives,
        "negatives": point.true_negatives + point.false_positives,
        "true_positives": point.true_positives,
        "true_negatives": point.true_negatives,
    }


def validation_figures(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, Any]:
    """The "validation" entry of docs/metrics.json: where the threshold was chosen."""
    shown = figures(scores, labels, threshold)
    return {key: shown[key] for key in ("auroc", "sensitivity", "specificity")}


def threshold_rule(args: argparse.Namespace) -> str:
    return f"highest threshold with validation sensitivity >= {args.target_sensitivity}"


def provenance(
    args: argparse.Namespace, started: float, data_seconds: float, train_seconds: float
) -> dict[str, Any]:
    """How a run was made, the last keys of docs/metrics.json: enough to repeat it."""
    return {
        "seconds": {
            "data": round(data_seconds, 1),
            "training": round(train_seconds, 1),
            "total": round(time.perf_counter() - started, 1),
        },
        "cpu_threads": args.threads,
        "workers": args.workers,
        "command": args.command,
        "input": SPEC.as_dict(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "monai": _monai_version(),
            "numpy": np.__version__,
        },
    }


def _monai_version() -> str:
    import monai

    return str(monai.__version__)


def build_network(network_def: dict[str, Any]) -> torch.nn.Module:
    """The network as the bundle's configs/inference.json builds it (MONAI's ConfigParser), so
    training and the node instantiate the very same thing."""
    from monai.bundle import ConfigParser

    parser = ConfigParser({"network_def": json.loads(json.dumps(network_def))})
    net: torch.nn.Module = parser.get_parsed_content("network_def", instantiate=True)
    return net


def inference_config(
    network_def: dict[str, Any], inferer: dict[str, Any] | None = None
) -> dict[str, Any]:
    """configs/inference.json: the network (and the inferer, if not the whole input at once)."""
    return {
        "imports": ["$import torch"],
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "network_def": network_def,
        "network": "$@network_def.to(@device)",
        **({"inferer": inferer} if inferer is not None else {}),
        "preprocessing_note": (
            "Input is produced by triage.analysis.preprocess.model_input with the 'input' "
            "section of "
            "triage.json: RAS orientation, block averaging of whole voxels no larger than pixdim "
            "(anti-aliasing), bilinear resampling to pixdim, HU window to [0, 1] with clipping, "
            "centre crop or zero pad to spatial_size."
        ),
    }


def metadata(
    metrics: dict[str, Any],
    about: dict[str, str],
    eval_metrics: dict[str, Any],
    network_data_format: dict[str, Any],
) -> dict[str, Any]:
    """configs/metadata.json (MONAI's bundle schema). `about` gives the model's name, task,
    description, label_classes and pred_classes; the rest is the same for both models."""
    versions = metrics["versions"]
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/"
        "0.8.1/meta_schema_20220324.json",
        "version": "1.0.0",
        "changelog": {"1.0.0": "first version, trained on synthetic head-CT phantoms"},
        "monai_version": versions["monai"],
        "pytorch_version": versions["torch"].split("+")[0],
        "numpy_version": versions["numpy"],
        "required_packages_version": {},
        "name": about["name"],
        "task": about["task"],
        "description": about["description"],
        "authors": "triage project",
        "copyright": "Apache-2.0",
        "data_source": "synthetic phantoms generated by triage.synthetic.phantom (no patient data)",
        "data_type": "synthetic",
        "image_classes": "one channel: CT in HU, windowed [0, 100] HU to [0, 1]",
        "label_classes": about["label_classes"],
        "pred_classes": about["pred_classes"],
        "intended_use": "software testing and demonstration only; not for clinical use",
        "eval_metrics": {
            "held_out_auroc": metrics["held_out"]["auroc"],
            "held_out_sensitivity": metrics["held_out"]["sensitivity"],
            "held_out_specificity": metrics["held_out"]["specificity"],
            **eval_metrics,
        },
        "references": [],
        "network_data_format": network_data_format,
    }


def image_input(spatial_shape: list[int], is_patch_data: bool) -> dict[str, Any]:
    """The "inputs" of network_data_format: one windowed CT channel."""
    return {
        "image": {
            "type": "image",
            "format": "hounsfield",
            "modality": "CT",
            "num_channels": 1,
            "spatial_shape": spatial_shape,
            "dtype": "float32",
            "value_range": [0, 1],
            "is_patch_data": is_patch_data,
            "channel_def": {"0": "image"},
        }
    }


def produced_by(m: dict[str, Any]) -> str:
    """The README's closing paragraphs: what the figures mean and the command that made them."""
    return f"""These numbers describe synthetic phantoms only. \
They say nothing about real haemorrhage.

Produced by (seed {m["seed"]}, {m["cpu_threads"]} CPU threads, {m["workers"]} data workers,
{m["seconds"]["total"]:.0f} s in total of which {m["seconds"]["training"]:.0f} s training;
torch {m["versions"]["torch"]}, monai {m["versions"]["monai"]}):

```
{m["command"]}
```
"""


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def write_network(out: Path, state: dict[str, torch.Tensor], inference: dict[str, Any]) -> None:
    """models/model.pt and configs/inference.json: enough for the pipeline to run the model."""
    (out / "configs").mkdir(parents=True, exist_ok=True)
    (out / "models").mkdir(parents=True, exist_ok=True)
    torch.save(state, out / "models" / "model.pt")
    write_json(out / "configs" / "inference.json", inference)


def write_docs(
    out: Path, metrics: dict[str, Any], meta: dict[str, Any], options: dict[str, Any], text: str
) -> None:
    """The rest of the bundle: configs/metadata.json, triage.json, docs/metrics.json, README."""
    (out / "docs").mkdir(parents=True, exist_ok=True)
    write_json(out / "configs" / "metadata.json", meta)
    write_json(out / "triage.json", options)
    write_json(out / "docs" / "metrics.json", metrics)
    write_readme(out, text)


def write_readme(out: Path, text: str) -> None:
    """docs/README.md from the generated `text`, keeping a hand-written KEPT_SECTION.

    The shipped bundles' READMEs end with a section "On real head CT" measured and written by
    hand after training (`triage models evaluate` on real scans); a retrain or --docs-only would
    otherwise drop it. It is kept as it was: after a retrain its figures describe the old
    weights until they are measured again.
    """
    path = out / "docs" / "README.md"
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    start = old.find("\n" + KEPT_SECTION)
    if start >= 0:
        text += old[start:]
    path.write_text(text, encoding="utf-8")


def rewrite_readme(out: Path, readme: Callable[[dict[str, Any]], str]) -> None:
    """--docs-only: docs/README.md again from the bundle's docs/metrics.json, no training."""
    metrics = json.loads((out / "docs" / "metrics.json").read_text(encoding="utf-8"))
    write_readme(out, readme(metrics))
    print(f"rewrote {out / 'docs' / 'README.md'} from docs/metrics.json")


def training_parser(
    doc: str, out: str, seed: int, train: int, val: int, test: int, epochs: int, lr: float
) -> argparse.ArgumentParser:
    """The options every training run has, with the script's own defaults."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(out))
    parser.add_argument("--seed", type=int, default=seed)
    parser.add_argument("--train", type=int, default=train, help="training phantoms")
    parser.add_argument("--val", type=int, default=val, help="validation phantoms")
    parser.add_argument("--test", type=int, default=test, help="held-out test phantoms")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--target-sensitivity", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads for training")
    parser.add_argument("--workers", type=int, default=2, help="processes generating phantoms")
    parser.add_argument(
        "--docs-only",
        action="store_true",
        help="only rewrite docs/README.md from the bundle's docs/metrics.json (no training)",
    )
    return parser


def parse(
    parser: argparse.ArgumentParser, script: str, argv: list[str] | None
) -> argparse.Namespace:
    """Parsed options, with `command`: the command line as the README shows it."""
    args = parser.parse_args(argv)
    shown = [script, *(argv if argv is not None else sys.argv[1:])]
    args.command = ".venv/bin/python " + shlex.join(shown)
    return args
