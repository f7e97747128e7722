"""`triage inspect` as a user runs it: on a folder, on a study in the node's store, on nonsense."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydicom.uid import generate_uid
from support.factories import (
    phantom_ct_series,
    secondary_capture,
    vendor_ct_series,
    vendor_localizer,
)

from triage.catalogue import Catalogue
from triage.config import PROJECT_ROOT, load_settings
from triage.modelops.registry import ModelLifecycle
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
    report = json.loads(result.stdout)
    (series,) = report["series"]
    assert series["series_instance_uid"] == datasets[0].SeriesInstanceUID
    assert series["volume"]["shape"] == [32, 32, 5]
    # what the catalogue holds is what the models choose from: 5 images, fewer than 16
    for model in report["models"]:
        assert model["chosen_series_instance_uid"] is None
        assert model["series"][0]["reason"] == "5 images, fewer than 16"


def test_inspect_names_what_does_not_exist(tmp_path: Path) -> None:
    result = triage(str(tmp_path / "nowhere"), home=tmp_path / "home")
    assert result.returncode == 2
    assert "no such file or folder" in result.stderr
    result = triage("1.2.3.4.5", home=tmp_path / "home")
    assert result.returncode == 2
    assert "neither a file or folder nor a study in the catalogue" in result.stderr


def philips_head_study(folder: Path) -> dict[str, str]:
    """The issue's Philips head CT: surview, iDose soft tissue, bone, and an exam summary
    (Secondary Capture, Modality CT); returns SeriesInstanceUID by series number."""
    uid = generate_uid(entropy_srcs=["inspect philips"])
    thin: dict[str, Any] = {"manufacturer": "Philips", "thickness": 1.0, "slices": 20}
    datasets = [
        vendor_localizer(uid, 1000, "", "Philips"),
        *vendor_ct_series(uid, 2020, "STD BRAIN 1MM, iDose", "UB", **thin),
        *vendor_ct_series(uid, 2030, "BONE BRAIN 1MM", "YA", **thin),
        *secondary_capture(
            uid, 4010, "Exam Summary", manufacturer="Philips", image_type=("DERIVED", "SECONDARY")
        ),
    ]
    folder.mkdir()
    for n, ds in enumerate(datasets):
        ds.save_as(folder / f"{n}.dcm", enforce_file_format=True)
    return {str(ds.SeriesNumber): str(ds.SeriesInstanceUID) for ds in datasets}


def test_inspect_shows_which_series_each_shipped_model_would_analyse(tmp_path: Path) -> None:
    uids = philips_head_study(tmp_path / "study")
    home = tmp_path / "home"  # no registry: the bundles in TRIAGE_MODELS (the shipped ones)
    text = triage(str(tmp_path / "study"), home=home)
    assert text.returncode == 0, text.stderr
    out = text.stdout
    assert "Models from TRIAGE_MODELS=" in out and "(the node has no registry yet)" in out
    assert "kernel UB, slice thickness 1 mm, contrast agent (none)" in out
    for model, role in (("ich_classifier", "active"), ("lesion_segmenter", "shadow")):
        assert f'({role}): would analyse series 2020 "STD BRAIN 1MM, iDose"' in out
        assert model in out
    assert 'not series 2030 "BONE BRAIN 1MM": kernel YA is excluded (re:^Y[A-F]$)' in out
    assert "not series 1000: image type LOCALIZER" in out
    assert (
        'not series 4010 "Exam Summary": Secondary Capture Image Storage is not CT image storage'
        in out
    )

    report = json.loads(triage("--json", str(tmp_path / "study"), home=home).stdout)
    assert {s["series_number"] for s in report["series"]} == {"1000", "2020", "2030", "4010"}
    by_number = {s["series_number"]: s for s in report["series"]}
    assert by_number["2030"]["convolution_kernel"] == "YA"
    assert by_number["2030"]["slice_thickness"] == 1.0
    assert by_number["2030"]["contrast_agent"] == "" and by_number["2030"]["refused"] == []
    assert report["models_from"].startswith("TRIAGE_MODELS=")
    models = {m["name"]: m for m in report["models"]}
    assert set(models) == {"ich_classifier", "lesion_segmenter"}
    classifier = models["ich_classifier"]
    assert classifier["role"] == "active" and classifier["error"] is None
    assert classifier["chosen_series_instance_uid"] == uids["2020"]
    assert classifier["reason"] is None
    verdicts = {v["series_number"]: v for v in classifier["series"]}
    assert verdicts["2020"] == {
        "series_instance_uid": uids["2020"],
        "series_number": "2020",
        "series_description": "STD BRAIN 1MM, iDose",
        "chosen": True,
        "qualifies": True,
        "reason": None,
    }
    assert verdicts["2030"]["reason"] == "kernel YA is excluded (re:^Y[A-F]$)"
    assert not verdicts["2030"]["chosen"] and not verdicts["2030"]["qualifies"]
    assert verdicts["1000"]["reason"] == "image type LOCALIZER"


def test_inspect_uses_the_node_registry_when_it_has_one(tmp_path: Path) -> None:
    uids = philips_head_study(tmp_path / "study")
    home = tmp_path / "home"
    settings = load_settings({"TRIAGE_HOME": str(home)})
    home.mkdir()
    options = json.loads((PROJECT_ROOT / "models/ich_classifier/triage.json").read_text())
    options["name"] = "bone_reader"
    options["series"] = {"modality": ["CT"], "prefer_kernel": ["YA"], "min_slices": 8}
    (tmp_path / "bone.json").write_text(json.dumps(options))
    catalogue = Catalogue(settings.database_url)
    lifecycle = ModelLifecycle(catalogue, LocalStore(Path(settings.store)), home / "cache")
    info, _ = lifecycle.register(
        PROJECT_ROOT / "models/ich_classifier", tmp_path / "bone.json", by="test", trial="skip"
    )
    lifecycle.activate(info.name, info.version, by="test")
    catalogue.close()

    report = json.loads(triage("--json", str(tmp_path / "study"), home=home).stdout)
    assert report["models_from"].startswith("the node's registry")
    (model,) = report["models"]
    assert (model["name"], model["version"], model["role"]) == (
        "bone_reader",
        info.version,
        "active",
    )
    assert model["chosen_series_instance_uid"] == uids["2030"]
    verdicts = {v["series_number"]: v["reason"] for v in model["series"]}
    assert verdicts["2020"] == "kernel UB is less preferred than YA of series 2030 (prefer_kernel)"


def test_inspect_real_head_ct_names_the_series_the_models_choose(
    tmp_path: Path, shared_data: Path
) -> None:
    result = triage("--json", str(shared_data / "ct_head_ge_tilt_uneven"), home=tmp_path / "h")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    (series,) = report["series"]
    assert (series["convolution_kernel"], series["slice_thickness"]) == ("STD+", 4.0)
    for model in report["models"]:
        assert model["chosen_series_instance_uid"] == series["series_instance_uid"]
