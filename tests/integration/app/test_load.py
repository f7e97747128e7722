"""The load test (benchmarks/load.py) at a reduced size: nothing may be lost.

12 studies of a scout and 20 axial slices of 64 x 64 pixels, sent by 4 concurrent storescu
processes (the first study of each sender split with the next sender, 5% of the files sent twice
by another sender) into ``triage serve`` with Orthanc as its PACS. The script itself waits, with
a deadline, until every study is triaged and every SR is in Orthanc. The full size (100 x 50)
runs by the command in docs/reliability.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.orthanc import ORTHANC
from support.paths import PROJECT_ROOT, require

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = PROJECT_ROOT
STUDIES, SLICES, SENDERS = 12, 20, 4


def test_reduced_load_loses_nothing(tmp_path: Path) -> None:
    if ORTHANC is None:
        pytest.skip("Orthanc is not installed (Debian package orthanc)")
    require("storescu")
    require("echoscu")
    out = tmp_path / "load.json"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "load.py"),
        *("--studies", str(STUDIES), "--slices", str(SLICES), "--size", "64"),
        *("--senders", str(SENDERS), "--duplicates", "0.05", "--split", "0.25", "--batch", "2"),
        *("--deadline", "420", "--out", str(out), "--work", str(tmp_path / "work")),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=840, cwd=ROOT)
    assert out.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert done.returncode == 0, done.stdout[-3000:]
    per_study = SLICES + 1  # the scout and the axial slices
    instances = result["instances"]
    assert instances["unique"] == STUDIES * per_study
    assert instances["duplicates_sent"] == int(STUDIES * per_study * 0.05) > 0
    assert instances["sent"] == instances["unique"] + instances["duplicates_sent"]
    assert instances["acknowledged"] == instances["sent"]
    assert instances["stored"] == instances["unique"]
    assert instances["quarantined"] == 0
    assert result["failed_associations"] == 0
    studies = result["studies"]
    assert studies["split_across_two_senders"] == SENDERS  # the first study of each sender
    assert studies["received"] == studies["triaged"] == STUDIES
    assert studies["not_analysed"] == 0
    assert result["srs"] == {
        "expected": STUDIES,
        "in_pacs": STUDIES,
        "sr_instances_in_pacs": STUDIES,
    }
    assert result["lost"] == 0
    assert result["complete"] is True
    assert result["rss_mb"]["peak"] <= result["rss_mb"]["limit"]
    assert result["latency_s"]["p95"] is not None
