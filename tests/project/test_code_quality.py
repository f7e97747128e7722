"""Lint (ruff) and types (mypy on triage/) are part of the test suite."""

from __future__ import annotations

import subprocess
import sys

from support.paths import PROJECT_ROOT

ROOT = PROJECT_ROOT


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_ruff_lint() -> None:
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_on_the_library() -> None:
    result = run("mypy", "triage")
    assert result.returncode == 0, result.stdout + result.stderr
