"""The Dockerfile and compose.yaml stay true to the commands and settings: images cannot be
built here, so what they name is checked against the code."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from typer.testing import CliRunner

from triage.app.cli import app
from triage.config import _PARSERS

ROOT = Path(__file__).resolve().parents[2]
KNOWN = {f"TRIAGE_{name.upper()}" for name in _PARSERS} | {"TRIAGE_HOME", "TRIAGE_CONFIG"}
KNOWN |= {f"{name}_FILE" for name in KNOWN}


def _help(words: list[str]) -> None:
    assert words[0] == "triage", words
    args = [w for w in words[1:] if not w.startswith("--")][:2]
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, (words, result.output)
    for option in (w for w in words if w.startswith("--")):
        assert option in result.output, (words, option)


def test_compose_runs_only_commands_and_settings_that_exist() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    roles = set()
    for name, service in compose["services"].items():
        if service.get("image") != "triage":
            continue
        command = service["command"]
        _help(command)
        if "--role" in command:
            roles.add(command[command.index("--role") + 1])
        for variable in service.get("environment", {}):
            if variable.startswith("TRIAGE_"):
                assert variable in KNOWN, (name, variable)
    assert roles == {"receiver", "worker"}


def test_the_dockerfile_names_commands_and_settings_that_exist() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for variable in re.findall(r"\b(TRIAGE_[A-Z0-9_]+)=", text):
        assert variable in KNOWN, variable
    for line in re.findall(r"^#\s+(triage [^|\n]+?)\s{2,}", text, re.MULTILINE):
        _help(line.split())
    assert 'CMD ["triage", "serve"]' in text
    assert "torch==2.13.0" in text
