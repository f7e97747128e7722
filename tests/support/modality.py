"""dcmtk's storescu as the sending modality."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from support.paths import require


def storescu(
    folder: Path,
    port: int,
    called: str = "TRIAGE",
    calling: str = "MODALITY",
) -> subprocess.CompletedProcess[str]:
    """Send every file under ``folder`` in one association, as a modality would (verbose: a
    failed test shows each status)."""
    exe = require("storescu")
    return subprocess.run(
        [exe, "-v", "-aet", calling, "-aec", called, "+sd", "+r", "127.0.0.1"]
        + [str(port), str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
