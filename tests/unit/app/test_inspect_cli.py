"""`triage inspect` as a user runs it: on a folder, on a study in the node's store, on nonsense."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from support.factories import phantom_ct_series

from triage.catalogue import Catalogue
from triage.config import load_settings
from triage.receive.receiver import describe_instance
from triage.store import LocalStore


def triage(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "triage.app.cli", "inspect", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "TRIAGE_HOME": str(home)},
        timeout=120,
    )


def test_inspect_a_folder_as_text_and_json(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    folder.mkdir()
    for n, ds in enumerate(phantom_ct_series("inspect-cli", 1, (32, 32, 6))):
        ds.save_as(folder / f"{n}.dcm", enforce_file_format=True)
    text = triage(str(folder), home=tmp_path / "home")
    assert text.returncode == 0, text.stderr
    assert "volume 32 x 32 x 6 (columns x rows x slices)" in text.stdout
    assert "1 series (1 with volume(s)), 0 file(s) skipped" in text.stdout
    report = json.loads(triage("--json", str(folder), home=tmp_path / "home").stdout)
    (series,) = report["series"]
    assert series["volume"]["shape"] == [32, 32, 6]
    assert series["volume"]["spacing"] == [7.0, 7.0, 5.0]
    assert series["reason"] is None and series["instances"] == 6


def test_inspect_a_study_in_the_store(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = load_settings({"TRIAGE_HOME": str(home)})
    home.mkdir()
    store, catalogue = LocalStore(Path(settings.store)), Catalogue(settings.database_url)
    datasets = phantom_ct_series("inspect-store", 2, (32, 32, 5))
    for ds in datasets:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        record = describe_instance(ds, str(ds.file_meta.TransferSyntaxUID), len(buffer.getvalue()))
        store.put(record.key, buffer.getvalue())
        catalogue.record_instance(record)
    result = triage("--json", str(datasets[0].StudyInstanceUID), home=home)
    assert result.returncode == 0, result.stderr
    (series,) = json.loads(result.stdout)["series"]
    assert series["series_instance_uid"] == datasets[0].SeriesInstanceUID
    assert series["volume"]["shape"] == [32, 32, 5]


def test_inspect_names_what_does_not_exist(tmp_path: Path) -> None:
    result = triage(str(tmp_path / "nowhere"), home=tmp_path / "home")
    assert result.returncode == 2
    assert "no such file or folder" in result.stderr
    result = triage("1.2.3.4.5", home=tmp_path / "home")
    assert result.returncode == 2
    assert "neither a file or folder nor a study in the catalogue" in result.stderr
