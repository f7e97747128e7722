"""The whole loop against real components: dcmtk storescu as the modality, the node with its
Prefect flows, the shipped model, and Orthanc as the PACS receiving the SRs."""

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
from support.dicom_checks import assert_dciodvfy_clean
from support.modality import storescu
from support.nodes import node_env, running_node
from support.orthanc import srs_in_orthanc
from support.waiting import wait_until

from triage.app.demo import DemoStudy, write_demo_studies
from triage.report.sr_read import read_triage_sr
from triage.results import Priority

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def node(
    tmp_path_factory: pytest.TempPathFactory, orthanc: Any, prefect_harness: None
) -> Iterator[Any]:
    env = node_env(tmp_path_factory.mktemp("node"), orthanc.node)
    with running_node(env) as n:
        n.env = env  # type: ignore[attr-defined]
        yield n


@pytest.fixture(scope="module")
def studies(node: Any, tmp_path_factory: pytest.TempPathFactory) -> list[DemoStudy]:
    root = tmp_path_factory.mktemp("studies")
    made = write_demo_studies(root, count=4, seed=11, shape=(160, 160, 30), spacing=(1.4, 1.4, 5.0))
    for study in made:
        result = storescu(study.folder, node.port)
        assert result.returncode == 0, result.stderr
    uids = {s.study_instance_uid for s in made}

    def all_done() -> bool:
        rows = [r for r in node.svc.catalogue.worklist() if r.study_instance_uid in uids]
        delivered = {d.study_instance_uid for d in node.svc.catalogue.deliveries(["delivered"])}
        return (
            len(rows) == len(made)
            and all(r.state in ("triaged", "not analysed") for r in rows)
            and {s.study_instance_uid for s in made} <= delivered
        )

    wait_until(all_done, 180, "every study triaged and every SR delivered")
    return made


def test_every_instance_sent_is_stored_once(node: Any, studies: list[DemoStudy]) -> None:
    files = sum(len(list(s.folder.glob("*.dcm"))) for s in studies)
    stored = [k for k in node.svc.store.keys("raw/")]
    mine = [k for k in stored if any(s.study_instance_uid in k for s in studies)]
    assert len(mine) == files
    assert node.receiver.stats.rejected == 0


def test_each_analysed_study_has_one_valid_sr_in_orthanc(
    node: Any, orthanc: Any, studies: list[DemoStudy], tmp_path: Path
) -> None:
    rows = {r.study_instance_uid: r for r in node.svc.catalogue.worklist()}
    for study in studies:
        srs = srs_in_orthanc(orthanc, study.study_instance_uid)
        assert len(srs) == 1, f"expected one SR in Orthanc for {study.accession_number}"
        data = orthanc.instance_file(srs[0]["ID"])
        path = tmp_path / f"{study.accession_number}.dcm"
        path.write_bytes(data)
        assert_dciodvfy_clean(path)
        if not study.analysable:  # the PACS is told why, not left to guess
            (said,) = read_triage_sr(pydicom.dcmread(io.BytesIO(data)))
            assert said.priority.value == "not analysed"
            assert said.reason == rows[study.study_instance_uid].reason.split(": ", 1)[1]
            continue
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.StudyInstanceUID == study.study_instance_uid
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
        (finding,) = read_triage_sr(ds)
        row = rows[study.study_instance_uid]
        (expected,) = row.findings
        assert finding.finding.value == "1386000"
        assert finding.probability == pytest.approx(expected.probability, abs=1e-6)
        assert finding.priority.value == row.priority
        assert finding.model_name == expected.model_name


def test_each_study_records_its_stage_times(node: Any, studies: list[DemoStudy]) -> None:
    # what the benchmarks and the web page's timeline read: the report stage among them
    timings = node.svc.catalogue.study_timings()
    for study in studies:
        stages = timings[study.study_instance_uid]
        assert {"report_s", "triage_s", "run_s", "work_s", "deliver_s"} <= set(stages), stages
        if study.analysable:
            assert {"assemble_s", "preprocess_s", "infer_s"} <= set(stages), stages
        assert 0 < stages["report_s"] < stages["triage_s"] <= stages["run_s"]


def test_lesion_studies_rank_above_normal_ones(node: Any, studies: list[DemoStudy]) -> None:
    env = {**os.environ, **node.env}
    out = subprocess.run(
        [sys.executable, "-m", "triage.app.cli", "worklist", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    rows = json.loads(out.stdout)
    by_uid = {s.study_instance_uid: s for s in studies}
    mine = [r for r in rows if r["study_instance_uid"] in by_uid]
    assert len(mine) == len(studies)
    lesion_ranks = [i for i, r in enumerate(mine) if by_uid[r["study_instance_uid"]].lesion]
    normal_ranks = [
        i
        for i, r in enumerate(mine)
        if not by_uid[r["study_instance_uid"]].lesion and by_uid[r["study_instance_uid"]].analysable
    ]
    assert max(lesion_ranks) < min(normal_ranks)
    for r in mine:
        study = by_uid[r["study_instance_uid"]]
        if study.lesion:
            assert r["priority"] == Priority.URGENT.value
            assert r["findings"][0]["probability"] >= r["findings"][0]["threshold"]
        elif study.analysable:
            assert r["priority"] == Priority.ROUTINE.value
        else:
            assert r["state"] == "not analysed" and r["priority"] == "not analysed"
            assert "no series matches" in r["reason"]


def test_late_instance_reopens_and_replaces_the_result(
    node: Any, orthanc: Any, studies: list[DemoStudy], tmp_path: Path
) -> None:
    import numpy as np

    from triage.synthetic.phantom import head_phantom
    from triage.synthetic.series import ct_series, write_series

    study = next(s for s in studies if s.analysable and not s.lesion)
    first = pydicom.dcmread(next(study.folder.glob("*.dcm")), stop_before_pixels=True)
    phantom = head_phantom(np.random.default_rng(3), (96, 96, 20), (2.0, 2.0, 5.0), False)
    extra = ct_series(
        phantom.hu,
        phantom.spacing,
        study_instance_uid=study.study_instance_uid,
        series_instance_uid=pydicom.uid.generate_uid(),
        patient_id=first.PatientID,
        patient_name=str(first.PatientName),
        accession_number=study.accession_number,
        study_description=first.StudyDescription,
        series_description="Late recon",
        series_number=5,
        study_date=first.StudyDate,
        study_time=first.StudyTime,
    )
    write_series(extra, tmp_path / "late")
    _state, generation = node.svc.catalogue.study_state(study.study_instance_uid)
    assert storescu(tmp_path / "late", node.port).returncode == 0

    def retriaged() -> bool:
        state = node.svc.catalogue.study_state(study.study_instance_uid)
        return state is not None and state[1] > generation and state[0] == "triaged"

    wait_until(retriaged, 60, "the study to be triaged again")
    wait_until(lambda: not node.svc.catalogue.due_deliveries(), 30, "delivery")
    assert len(srs_in_orthanc(orthanc, study.study_instance_uid)) == 1
