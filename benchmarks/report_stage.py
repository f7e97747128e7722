"""The report stage alone: the documents of one analysed thin-slice series, in one process.

    .venv/bin/python benchmarks/report_stage.py [--slices 200] [--size 512] [--runs 3]

A fresh TRIAGE_HOME (local store, SQLite catalogue, the shipped models on CPU); a synthetic head
CT of ``--slices`` slices of ``--size`` x ``--size`` is stored and catalogued, then for each run a
new study: the active models' analysis (`pipeline.analyse`, which hands its parsed headers to the
report) and the timed `pipeline.report` (the SR built and stored). The first run includes
highdicom's first use; the goal (issue 14) is <= 0.3 s for a 200-image series. Compare with the
report stage of the running node in ``benchmarks/pipeline.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from support.factories import phantom_ct_series, store_head_ct  # noqa: E402

from triage.app import pipeline  # noqa: E402
from triage.app.services import Services  # noqa: E402
from triage.config import load_settings  # noqa: E402
from triage.results import SHADOW  # noqa: E402


def store_series(svc: Services, tag: str, slices: int, size: int) -> str:
    pixel = 230 / size
    return store_head_ct(
        svc, phantom_ct_series(tag, 5, (size, size, slices), spacing=(pixel, pixel, 0.8))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="triage-report-"))
    settings = load_settings(
        {"TRIAGE_HOME": str(home), "TRIAGE_PACS": "PACS@127.0.0.1:104", "TRIAGE_DEVICE": "cpu"}
    )
    svc = Services.open(settings)
    seconds = []
    for run in range(args.runs):
        study = store_series(svc, f"report-stage-{run}", args.slices, args.size)
        active = [a for a in pipeline.plan_study(svc, study) if a.role != SHADOW and a.model_name]
        analyses = [pipeline.analyse(svc, study, a) for a in active]
        t0 = time.perf_counter()
        pipeline.report(svc, study, analyses)
        seconds.append(time.perf_counter() - t0)
        print(f"run {run + 1}: report {seconds[-1]:.3f} s ({args.slices} images)", flush=True)
    warm = sorted(seconds[2:]) or sorted(seconds)  # the first two runs pay for first use
    print(f"from the third run on: {warm[0]:.3f}-{warm[-1]:.3f} s (goal <= 0.3 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
