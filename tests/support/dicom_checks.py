"""Checks on DICOM files by independent tools (dicom3tools), shared by the tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def dciodvfy_output(path: Path | str) -> str:
    """What ``dciodvfy`` says about the file (it reports on stderr); skips when not installed."""
    executable = shutil.which("dciodvfy")
    if executable is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    completed = subprocess.run(
        [executable, str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    return completed.stdout + completed.stderr


def assert_dciodvfy_clean(path: Path | str) -> str:
    """Fail when ``dciodvfy`` reports any error on the file; warnings are allowed.

    Returns the full output so a test can show or check the warnings.
    """
    output = dciodvfy_output(path)
    errors = [line for line in output.splitlines() if "Error" in line]
    assert not errors, f"dciodvfy reports {len(errors)} error(s) on {path}:\n{output}"
    return output
