"""The model lifecycle on a running node: MONAI zoo-layout bundles registered unchanged, an active
and a shadow version on the same studies, promotion, rollback from another process, and what the
PACS (Orthanc) receives."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from support.bundles import classifier_bundle, options, segmenter_bundle, write_options
from support.dicom_checks import assert_dciodvfy_clean
from support.nodes import node_env, running_node
from support.paths import require
from support.waiting import run_finished, wait_until

from triage.app.demo import DemoStudy, write_demo_studies
from triage.report.sr_read import read_triage_sr

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def node(
    tmp_path_factory: pytest.TempPathFactory, orthanc: Any, prefect_harness: None
) -> Iterator[Any]:
    home = tmp_path_factory.mktemp("lifecycle-node")
    shipped = home / "no-shipped-models"
    shipped.mkdir()
    env = node_env(
        home,
        orthanc.node,
        QUIET_SECONDS="1",
        DELIVERY_BACKOFF_SECONDS="0.5",
        MODELS=str(shipped),
    )
    with running_node(env) as n:
        n.env = env  # type: ignore[attr-defined]
        yield n


def triage_one(node: Any, root: Path, seed: int) -> DemoStudy:
    """Send one head CT with storescu; wait until it is triaged and its SRs are delivered."""
    (study,) = write_demo_studies(
        root / f"s{seed}",
        count=1,
        seed=seed,
        unanalysable=0,
        shape=(64, 64, 20),
        spacing=(3.5, 3.5, 5.0),
    )
    sent = subprocess.run(
        [
            require("storescu"),
            "-aet",
            "MODALITY",
            "-aec",
            "TRIAGE",
            "+sd",
            "+r",
            "127.0.0.1",
            str(node.port),
            str(study.folder),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sent.returncode == 0, sent.stderr
    uid = study.study_instance_uid

    def done() -> bool:
        state = node.svc.catalogue.study_state(uid)
        rows = [d for d in node.svc.catalogue.deliveries() if d.study_instance_uid == uid]
        return (
            state is not None
            and state[0] == "triaged"
            and bool(rows)
            and all(d.state == "delivered" for d in rows)
        )

    wait_until(done, 120, f"study {study.accession_number} triaged and delivered")
    # the shadow models run after the active result went out
    wait_until(run_finished(node.svc.catalogue, uid), 120, "the shadow models' results")
    return study


def srs_in_orthanc(orthanc: Any, study_uid: str) -> list[pydicom.Dataset]:
    out = []
    for item in orthanc.instances_of_study(study_uid):
        tags = orthanc.get(f"/instances/{item['ID']}/tags?simplify")
        if tags.get("Modality") == "SR":
            out.append(pydicom.dcmread(io.BytesIO(orthanc.instance_file(item["ID"]))))
    return out


def cli(node: Any, *args: str) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "triage.app.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **node.env},
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_shadow_promotion_and_rollback_on_a_running_node(
    node: Any, orthanc: Any, tmp_path: Path
) -> None:
    registry = node.svc.lifecycle
    zoo = tmp_path / "zoo"
    cls_bundle = classifier_bundle(zoo)
    seg_bundle = segmenter_bundle(zoo)
    cls_options = options(spatial_size=[64, 64, 32])
    seg_options = options(
        "segmentation",
        spatial_size=[48, 48, 16],
        threshold=0.01,  # random weights: make the finding positive so the SR holds the lesion
        segmentation={"score": "max_probability", "voxel_threshold": 0.05},
    )
    v1, _ = registry.register(
        cls_bundle, write_options(tmp_path / "cls.json", cls_options), by="ana"
    )
    registry.activate(v1.name, v1.version, by="ana", reason="first classifier")
    seg, _ = registry.register(
        seg_bundle, write_options(tmp_path / "seg.yaml", seg_options), by="ana"
    )
    registry.shadow(seg.name, seg.version, by="ana", reason="try the segmenter on live studies")

    # A: one active and one shadow version on the same study
    a = triage_one(node, tmp_path, 1)
    (sr,) = srs_in_orthanc(orthanc, a.study_instance_uid)  # exactly one SR: the active one's
    (finding,) = read_triage_sr(sr)
    assert (finding.model_name, finding.model_version) == (v1.name, v1.version)
    row = next(
        r for r in node.svc.catalogue.worklist() if r.study_instance_uid == a.study_instance_uid
    )
    assert [(f.model_name, f.role) for f in row.findings] == [(v1.name, "active")]
    (shadow,) = row.shadow_findings
    assert (shadow.model_name, shadow.model_version, shadow.role) == (
        seg.name,
        seg.version,
        "shadow",
    )
    assert shadow.lesion_volume_ml is not None and shadow.lesion_volume_ml > 0
    assert row.priority == next(iter(row.findings)).priority  # the shadow result did not count
    outbox = [
        d
        for d in node.svc.catalogue.deliveries()
        if d.study_instance_uid == a.study_instance_uid and d.kind == "sr"
    ]
    assert len(outbox) == 1

    # B: a new version with another threshold, activated
    v2, _ = registry.register(
        cls_bundle,
        write_options(tmp_path / "cls2.json", {**cls_options, "threshold": 0.9}),
        by="ben",
    )
    registry.activate(v2.name, v2.version, by="ben", reason="fewer false alarms")
    b = triage_one(node, tmp_path, 2)
    (sr,) = srs_in_orthanc(orthanc, b.study_instance_uid)
    assert read_triage_sr(sr)[0].model_version == v2.version

    # C: rolled back from another process (the CLI); the node takes it from the next study
    cli(node, "models", "rollback", v1.name, "--by", "cho", "--reason", "misses a lesion")
    c = triage_one(node, tmp_path, 3)
    (sr,) = srs_in_orthanc(orthanc, c.study_instance_uid)
    assert read_triage_sr(sr)[0].model_version == v1.version
    trail = [(ch.who, ch.action, ch.model_version) for ch in registry.changes(v1.name)]
    assert ("ben", "activate", v2.version) in trail
    assert trail[0] == ("cho", "rollback", v1.version)

    # D: the segmenter promoted: its SR holds the lesion's volume and centre, and is valid
    registry.activate(seg.name, seg.version, by="ana", reason="shadow results agree")
    d = triage_one(node, tmp_path, 4)
    srs = {
        read_triage_sr(s)[0].model_name: s for s in srs_in_orthanc(orthanc, d.study_instance_uid)
    }
    assert set(srs) == {v1.name, seg.name}
    (lesion,) = read_triage_sr(srs[seg.name])
    assert lesion.lesion_volume_ml is not None and lesion.lesion_volume_ml > 0
    assert lesion.lesion_centre_lps is not None
    path = tmp_path / "seg_sr.dcm"
    srs[seg.name].save_as(path)
    assert_dciodvfy_clean(path)

    # what an ML engineer and the worklist see
    rows = {r["study_instance_uid"]: r for r in json.loads(cli(node, "worklist", "--json"))}
    assert [f["model"] for f in rows[a.study_instance_uid]["shadow_findings"]] == [seg.name]
    assert rows[a.study_instance_uid]["shadow_findings"][0]["lesion_volume_ml"] > 0
    assert [f["model"] for f in rows[d.study_instance_uid]["findings"]] != []
    assert rows[d.study_instance_uid]["shadow_findings"] == []
    shown = json.loads(cli(node, "models", "show", seg.name, "--json"))
    (version,) = shown["versions"]
    assert version["state"] == "active"
    assert len(version["live"]["scores"]) == 4  # studies A-D
    assert [c["action"] for c in shown["changes"]][:3] == ["activate", "shadow", "register"]
