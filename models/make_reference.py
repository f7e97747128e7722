"""Write each shipped bundle's input reference (reference.json) from its validation phantoms.

The reference is what the registry records at registration for the out-of-distribution check
(`triage.analysis.ood`): the statistics of the model's inputs on studies like those it was
validated on. For the demonstration models those are the synthetic head phantoms of their
training scripts (`models/_common.py`: `random_grid` and `head_phantom`, half with a lesion),
from seeds that neither training, validation nor test used. The real CTs in the shared data are
never part of it: they are the check (docs/ood.md).

    python models/make_reference.py            # both bundles, 60 phantoms each
    python models/make_reference.py --count 80 models/ich_classifier

The statistics are the same to 1e-9 from run to run (float sums over threads).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import _common as common
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from triage.analysis.ood import Reference, input_statistics  # noqa: E402
from triage.analysis.preprocess import model_input  # noqa: E402
from triage.modelops.bundle import read_bundle  # noqa: E402
from triage.modelops.reference import REFERENCE_FILE  # noqa: E402

HERE = Path(__file__).resolve().parent
#: the training scripts use splits 0-2 (train, val, test) of their seed; this is another one
REFERENCE_SPLIT = 7


def phantom_statistics(bundle_folder: Path, count: int, seed: int) -> list[np.ndarray]:
    spec = read_bundle(bundle_folder).options.input
    rows = []
    for index in range(count):
        made = common.phantom(seed, REFERENCE_SPLIT, index)  # the training scripts' recipe
        x = model_input(made.hu, made.affine_lps, spec, torch.device("cpu"))
        rows.append(input_statistics(x, spec.pixdim))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="*", type=Path)
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--seed", type=int, default=20240501)
    args = parser.parse_args()
    bundles = args.bundles or [HERE / "ich_classifier", HERE / "lesion_segmenter"]
    for folder in bundles:
        t0 = time.perf_counter()
        rows = phantom_statistics(folder, args.count, args.seed)
        source = (
            f"{args.count} synthetic head phantoms (models/make_reference.py --seed {args.seed})"
        )
        ref = Reference.fit(rows, source)
        path = folder / REFERENCE_FILE
        path.write_text(json.dumps(ref.as_dict(), indent=1) + "\n", encoding="utf-8")
        print(f"{path}: threshold {ref.threshold:.2f} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
