"""The model registry: zoo-layout bundles register unchanged with a separate options file, broken
bundles are refused with a message naming the problem and leave nothing behind, versions are
content hashes, and the lifecycle (activate, shadow, retire, rollback) is audited."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support.bundles import (
    SEGRESNET,
    UNET,
    classifier_bundle,
    options,
    segmenter_bundle,
    write_options,
    zip_bundle,
    zoo_bundle,
)
from support.paths import PROJECT_ROOT

from triage.analysis.inference import segmentation_score
from triage.analysis.model import SegmentationScore
from triage.catalogue import Catalogue
from triage.errors import ModelError
from triage.modelops.options import parse_options
from triage.modelops.registry import FIRST_START_BY, ModelLifecycle
from triage.store import LocalStore

PROJECT = PROJECT_ROOT
CLS_OPTIONS = {"spatial_size": [64, 64, 32]}
SEG_OPTIONS = {"spatial_size": [48, 48, 16]}


@pytest.fixture
def registry(tmp_path: Path) -> ModelLifecycle:
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'catalogue.db'}")
    return ModelLifecycle(catalogue, LocalStore(tmp_path / "store"), tmp_path / "cache")


def snapshot(registry: ModelLifecycle) -> tuple[list, list, list]:
    return (
        [(v.name, v.version, v.state) for v in registry.versions()],
        [(c.action, c.model_version) for c in registry.changes()],
        sorted(registry.store.keys("models/")),
    )


def tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_a_zoo_bundle_registers_unchanged_with_a_separate_options_file(
    registry: ModelLifecycle, tmp_path: Path
) -> None:
    bundle = classifier_bundle(tmp_path / "zoo")
    before = tree(bundle)
    opts = write_options(tmp_path / "mine.json", options(**CLS_OPTIONS))
    info, new = registry.register(bundle, opts, by="ml-engineer", reason="first try")
    assert new
    assert tree(bundle) == before  # the bundle is not edited, nothing is added to it
    assert info.name == "zoo_classifier"
    assert info.version == f"0.1.0+{info.content_hash[:8]}"
    assert info.state == "registered"
    assert registry.store.exists(info.key)
    assert info.trial is not None
    assert info.trial["output_shape"] == [1, 2]
    assert info.trial["input_shape"] == [1, 1, 64, 64, 32]
    assert info.trial["latency_s"] > 0
    assert info.trial["device"] == "cpu"
    assert info.trial["peak_memory_bytes"] is None or info.trial["peak_memory_bytes"] >= 0
    (change,) = registry.changes()
    assert (change.action, change.who, change.reason) == ("register", "ml-engineer", "first try")

    # the stored copy is the version: unpacked, it gives the same content hash and runs
    model = registry.model(info)
    assert model.version == info.version and model.task == "classification"
    assert model.network(torch.device("cpu"))(torch.zeros(1, 1, 64, 64, 32)).shape == (1, 2)


def test_the_same_content_is_the_same_version_and_any_change_a_new_one(
    registry: ModelLifecycle, tmp_path: Path
) -> None:
    bundle = classifier_bundle(tmp_path / "zoo")
    opts = write_options(tmp_path / "a.json", options(**CLS_OPTIONS))
    first, _ = registry.register(bundle, opts, by="a")
    archive = zip_bundle(bundle, tmp_path / "zoo_classifier.zip")
    again, new = registry.register(archive, opts, by="b")  # the zoo's zip of the same bundle
    assert not new and again.version == first.version
    stricter = write_options(tmp_path / "b.yaml", options(**CLS_OPTIONS, threshold=0.8))
    second, new = registry.register(archive, stricter, by="b")
    assert new and second.version != first.version
    assert [v.version for v in registry.versions("zoo_classifier")] == [
        first.version,
        second.version,
    ]


def test_yaml_configs_and_a_segresnet_register(registry: ModelLifecycle, tmp_path: Path) -> None:
    bundle = zoo_bundle(
        tmp_path / "zoo",
        "zoo_segresnet",
        SEGRESNET,
        spatial_shape=[32, 32, 16],
        task="segmentation",
        config_format="yaml",
    )
    opts = write_options(tmp_path / "seg.yaml", options("segmentation", spatial_size=[32, 32, 16]))
    info, _ = registry.register(bundle, opts, by="t")
    assert info.task == "segmentation"
    assert info.trial is not None and info.trial["output_shape"] == [1, 2, 32, 32, 16]


def test_a_segmentation_bundle_runs_by_sliding_window_as_its_inferer_says(
    registry: ModelLifecycle, tmp_path: Path
) -> None:
    bundle = segmenter_bundle(tmp_path / "zoo")
    seg = options("segmentation", **SEG_OPTIONS, segmentation={"score": "lesion_volume"})
    info, _ = registry.register(bundle, write_options(tmp_path / "seg.json", seg), by="t")
    model = registry.model(info)
    assert model.sliding_window is not None
    assert model.sliding_window.roi_size == (32, 32, 16)
    assert info.trial is not None
    assert info.trial["input_shape"] == [1, 1, 48, 48, 16]
    assert info.trial["output_shape"] == [1, 2, 48, 48, 16]


def test_the_lesion_of_a_mask_gives_the_probability_volume_and_centre() -> None:
    logits = torch.full((1, 2, 20, 20, 10), -5.0)
    logits[0, 0] = 5.0
    logits[0, 1, 4:8, 10:14, 2:6] = 6.0  # a 4 x 4 x 4 lesion, centre voxel (5.5, 11.5, 3.5)
    logits[0, 1, 16, 16, 8] = 9.0  # a lone voxel elsewhere: the most probable, not the lesion
    logits[0, 1, 6, 12, 4] = 9.5  # the most probable voxel lies in the lesion
    affine = np.diag([2.0, 2.0, 5.0, 1.0])
    affine[:3, 3] = [-10.0, 20.0, 100.0]
    rule = SegmentationScore("lesion_volume", voxel_threshold=0.5, half_volume_ml=1.28)
    verdict = segmentation_score(logits, (20, 20, 10), "softmax", 1, rule, affine)
    assert verdict.lesion_volume_ml == pytest.approx(64 * 2 * 2 * 5 / 1000)
    assert verdict.probability == pytest.approx(0.5)
    assert verdict.lesion_centre_lps == pytest.approx((-10 + 2 * 5.5, 20 + 2 * 11.5, 117.5))
    peak = segmentation_score(
        logits, (20, 20, 10), "softmax", 1, SegmentationScore("max_probability"), affine
    )
    assert peak.probability == pytest.approx(float(torch.sigmoid(torch.tensor(9.5 - 5.0))))
    with pytest.raises(ModelError, match="one value per input voxel"):
        segmentation_score(logits, (20, 20, 12), "softmax", 1, rule, affine)


def _broken(tmp_path: Path, problem: str) -> tuple[Path, Path]:
    root = tmp_path / "zoo"
    opts = options(**CLS_OPTIONS)
    if problem == "missing weights":
        bundle = classifier_bundle(root, weights_of={})
    elif problem == "weights of another network":
        bundle = classifier_bundle(root, weights_of=UNET)
    elif problem == "metadata is not JSON":
        bundle = classifier_bundle(root)
        (bundle / "configs" / "metadata.json").write_text('{"version": "1.0",')
    elif problem == "config is not JSON":
        bundle = classifier_bundle(root)
        (bundle / "configs" / "inference.json").write_text("{network_def: }")
    elif problem == "a network MONAI cannot build":
        bundle = classifier_bundle(root)
        config = json.loads((bundle / "configs" / "inference.json").read_text())
        config["network_def"]["growth_rate"] = "fast"
        (bundle / "configs" / "inference.json").write_text(json.dumps(config))
    elif problem == "options are not JSON":
        bundle = classifier_bundle(root)
        broken = tmp_path / "opts.json"
        broken.write_text('{"task": "classification",, }')
        return bundle, broken
    elif problem == "a map where a class score is expected":
        bundle = zoo_bundle(root, "misfit", UNET, spatial_shape=[32, 32, 16])
        opts = options(spatial_size=[32, 32, 16])
    elif problem == "fewer outputs than the options ask for":
        bundle = classifier_bundle(root)
        opts = options(**CLS_OPTIONS, output={"activation": "sigmoid", "index": 4})
    elif problem == "channels other than declared":
        bundle = classifier_bundle(root)
        meta = json.loads((bundle / "configs" / "metadata.json").read_text())
        meta["network_data_format"]["outputs"]["pred"]["num_channels"] = 3
        (bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
    elif problem == "an input the network cannot take":
        bundle = classifier_bundle(root)
        opts = options(spatial_size=[16, 16, 8])
        meta = json.loads((bundle / "configs" / "metadata.json").read_text())
        meta["network_data_format"]["inputs"]["image"]["spatial_shape"] = [16, 16, 8]
        (bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
    else:
        raise AssertionError(problem)
    return bundle, write_options(tmp_path / "opts.json", opts)


BROKEN = {
    "missing weights": r"models/model\.pt is missing",
    "weights of another network": r"model\.pt does not fit the network in inference\.json "
    r"\(DenseNet121\): .*weights of another network",
    "a network MONAI cannot build": r"network_def cannot be built",
    "metadata is not JSON": r"metadata\.json does not parse",
    "config is not JSON": r"inference\.json does not parse",
    "options are not JSON": r"opts\.json is not valid JSON",
    "a map where a class score is expected": r"wrong output shape: .*segmentation model",
    "fewer outputs than the options ask for": r"wrong output shape: .*2 output\(s\).*index 4",
    "channels other than declared": r"wrong output shape: the network gives 2 .* declares 3",
    "an input the network cannot take": r"failed on this input",
}


@pytest.fixture(scope="module")
def one_good_model(tmp_path_factory: pytest.TempPathFactory) -> ModelLifecycle:
    """A registry holding one version: the broken bundles must leave it as it is."""
    tmp = tmp_path_factory.mktemp("registry")
    catalogue = Catalogue(f"sqlite:///{tmp / 'catalogue.db'}")
    registry = ModelLifecycle(catalogue, LocalStore(tmp / "store"), tmp / "cache")
    good = segmenter_bundle(tmp / "good", "good_model")
    seg = write_options(tmp / "good.json", options("segmentation", **SEG_OPTIONS))
    registry.register(good, seg, by="t")
    return registry


@pytest.mark.parametrize("problem", sorted(BROKEN))
def test_a_broken_bundle_is_refused_naming_the_problem_and_nothing_is_left(
    one_good_model: ModelLifecycle, tmp_path: Path, problem: str
) -> None:
    registry = one_good_model
    before = snapshot(registry)
    bundle, opts = _broken(tmp_path, problem)
    with pytest.raises(ModelError, match=BROKEN[problem]):
        registry.register(bundle, opts, by="t")
    assert snapshot(registry) == before


def test_the_cli_refuses_a_broken_bundle_with_the_reason(tmp_path: Path) -> None:
    bundle = classifier_bundle(tmp_path / "zoo", weights_of=UNET)
    opts = write_options(tmp_path / "opts.json", options(**CLS_OPTIONS))
    env = {**os.environ, "TRIAGE_HOME": str(tmp_path / "home"), "TRIAGE_DEVICE": "cpu"}
    env["TRIAGE_MODELS"] = str(tmp_path / "no_shipped_models")
    (tmp_path / "no_shipped_models").mkdir()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "triage.app.cli",
            "models",
            "register",
            str(bundle),
            "--options",
            str(opts),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 2
    assert "zoo_classifier is not registered" in run.stderr
    assert "does not fit the network" in run.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "triage.app.cli", "models", "list", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    assert json.loads(listed.stdout) == []


def test_activate_shadow_retire_and_rollback_are_audited(
    registry: ModelLifecycle, tmp_path: Path
) -> None:
    bundle = segmenter_bundle(tmp_path / "zoo")
    base = options("segmentation", **SEG_OPTIONS)
    v1, _ = registry.register(bundle, write_options(tmp_path / "1.json", base), by="ana")
    stricter = options("segmentation", **SEG_OPTIONS, threshold=0.7)
    v2, _ = registry.register(bundle, write_options(tmp_path / "2.json", stricter), by="ana")
    name = v1.name
    registry.activate(name, v1.version, by="ana", reason="baseline")
    registry.shadow(name, v2.content_hash[:8], by="ana", reason="try the stricter threshold")
    assert {v.version: v.state for v in registry.versions(name)} == {
        v1.version: "active",
        v2.version: "shadow",
    }
    registry.activate(name, v2.version, by="ben", reason="shadow looked good")
    assert {v.version: v.state for v in registry.versions(name)} == {
        v1.version: "registered",
        v2.version: "active",
    }
    back = registry.rollback(name, by="cho", reason="too many misses")
    assert back.version == v1.version and back.state == "active"
    assert registry.versions(name)[1].state == "registered"
    trail = [
        (c.who, c.action, c.model_version, c.from_state, c.to_state) for c in registry.changes()
    ]
    assert trail[:3] == [
        ("cho", "rollback", v1.version, "registered", "active"),
        ("cho", "replace", v2.version, "active", "registered"),
        ("ben", "activate", v2.version, "shadow", "active"),
    ]
    assert registry.changes()[0].reason == "too many misses"
    with pytest.raises(ModelError, match="already active"):
        registry.activate(name, v1.version, by="d")
    registry.retire(name, v2.version, by="d", reason="superseded")
    with pytest.raises(ModelError, match="no earlier active version"):
        registry.rollback(name, by="d")
    with pytest.raises(ModelError, match="has no version 'nope'"):
        registry.activate(name, "nope", by="d")
    with pytest.raises(ModelError, match="say who"):
        registry.shadow(name, v2.version, by=" ")


def test_first_start_registers_the_shipped_bundles_in_their_roles(
    registry: ModelLifecycle,
) -> None:
    done = registry.ensure_registered(PROJECT / "models")
    roles = {v.name: v.state for v in done}
    assert roles["ich_classifier"] == "active"
    if (PROJECT / "models" / "lesion_segmenter" / "triage.json").is_file():
        assert roles["lesion_segmenter"] == "shadow"
    assert {c.who for c in registry.changes()} == {FIRST_START_BY}
    assert all(v.trial and "latency_s" in v.trial for v in done)
    assert registry.ensure_registered(PROJECT / "models") == []  # only when empty


def test_options_errors_name_the_key(tmp_path: Path) -> None:
    base = options(**CLS_OPTIONS)
    cases = {
        "treshold": ({**base, "treshold": 0.5}, "unknown key"),
        "task": ({**base, "task": "detection"}, '"task" must be one of'),
        "threshold": ({**base, "threshold": 1.5}, "between 0 and 1"),
        "finding": ({k: v for k, v in base.items() if k != "finding"}, "'finding' is missing"),
        "segmentation": (
            {**base, "task": "segmentation", "segmentation": {"score": "mean"}},
            "segmentation.score",
        ),
        "window": ({**base, "sliding_window": {"roi_size": [8, 8]}}, "roi_size"),
    }
    for name, (data, message) in cases.items():
        with pytest.raises(ModelError, match=message):
            parse_options(data, f"{name}.json")


def test_an_older_catalogue_gains_the_new_result_columns(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE results (id INTEGER PRIMARY KEY, study_id INTEGER, model_name "
            "VARCHAR(64), model_version VARCHAR(64), series_instance_uid VARCHAR(64), "
            "finding_value VARCHAR(64), finding_scheme VARCHAR(16), finding_meaning "
            "VARCHAR(128), probability FLOAT, threshold FLOAT, priority VARCHAR(32), "
            "sr_sop_instance_uid VARCHAR(64), created_at DATETIME)"
        )
        conn.execute(
            "INSERT INTO results VALUES (1, 1, 'm', '1', 's', '1', 'SCT', 'x', 0.5, 0.5, "
            "'urgent', NULL, '2024-01-01 00:00:00')"
        )
    Catalogue(f"sqlite:///{db}").close()
    with sqlite3.connect(db) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(results)")}
        role = conn.execute("SELECT role FROM results").fetchone()[0]
    assert {"role", "details"} <= columns
    assert role == "active"


def test_a_segmentation_sr_holds_the_lesion_with_documented_codes(tmp_path: Path) -> None:
    from pydicom.sr.codedict import codes
    from support.conformance import codes_in, documented_codes
    from support.dicom_checks import assert_dciodvfy_clean
    from support.factories import phantom_ct_series

    from triage.report.sr import build_triage_sr
    from triage.report.sr_read import read_triage_sr
    from triage.results import ModelResult, Priority

    headers = phantom_ct_series("test_model_registry", shape=(32, 32, 5))
    result = ModelResult(
        "lesion_segmenter",
        "1.0.0+abcdef12",
        codes.SCT.IntracranialHemorrhage,
        0.9,
        0.5,
        Priority.URGENT,
        str(headers[0].SeriesInstanceUID),
        lesion_volume_ml=2.5,
        lesion_centre_lps=(-10.0, 20.5, 3.25),
    )
    sr = build_triage_sr(headers, [result], software_version="test")
    missing = codes_in(sr) - documented_codes()
    assert not missing, f"codes in the SR but not in docs/conformance.md: {sorted(missing)}"
    (finding,) = read_triage_sr(sr)
    assert finding.lesion_volume_ml == 2.5
    assert finding.lesion_centre_lps == (-10.0, 20.5, 3.25)
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    assert_dciodvfy_clean(path)
    # a negative finding names no lesion
    negative = dataclasses.replace(result, probability=0.1, priority=Priority.ROUTINE)
    (finding,) = read_triage_sr(build_triage_sr(headers, [negative], software_version="test"))
    assert finding.lesion_centre_lps is None and finding.lesion_volume_ml is None


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit: still the zoo's format
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_a_torchscript_bundle_registers(registry: ModelLifecycle, tmp_path: Path) -> None:
    from support.bundles import network

    bundle = segmenter_bundle(tmp_path / "zoo", "zoo_torchscript", weights_of={})
    traced = torch.jit.trace(network(UNET).eval(), torch.zeros(1, 1, 32, 32, 16))
    traced.save(str(bundle / "models" / "model.ts"))
    seg = write_options(tmp_path / "seg.json", options("segmentation", **SEG_OPTIONS))
    info, _ = registry.register(bundle, seg, by="t")
    assert info.trial is not None and info.trial["output_shape"] == [1, 2, 48, 48, 16]
    assert "models/model.ts" in info.summary["files"]
