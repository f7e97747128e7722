"""Where things are: the project, the shared real data, and the tools the tests run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data" / "dicom"


def require(tool: str) -> str:
    """The path of a command-line tool; the test skips when it is not installed."""
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path
