"""A real PACS forwards a whole study to the node, as a router rule does.

Orthanc holds a head CT study as scanners and viewers leave it: the axial series, a scout, a
secondary capture "Exam Summary" (a real JPEG one and a generated one), a CT dose report (RDSR),
other SRs, a presentation state and a key object selection. It sends the study to the node with
``POST /modalities/{id}/store``. The job must succeed (a failing forward is retried, alarmed on
or switched off by the hospital), every instance must be in the node's store and catalogue,
and the study is triaged once. Orthanc then forwards the study again, now with the node's own
SR in it: the job succeeds again and the study is not triaged again.

Twice: with the tests' Orthanc (overwrite on) and with Orthanc's defaults
(``OverwriteInstances`` false, called AE title not checked).
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from support.forwarded import generated_objects, part10, real_objects
from support.orthanc import ORTHANC, Orthanc
from support.waiting import wait_until

from triage.app.demo import write_demo_studies
from triage.config import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUIET = "1.5"
NODE_AE = "TRIAGE"


@pytest.fixture(scope="module", params=["tuned", "default"])
def pacs(
    request: pytest.FixtureRequest, orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Orthanc]:
    if request.param == "tuned":
        yield orthanc
        return
    if ORTHANC is None:
        pytest.skip("Orthanc is not installed (Debian package orthanc)")
    plain = Orthanc(tmp_path_factory.mktemp("orthanc-defaults"))
    plain.start(extra={"OverwriteInstances": False, "DicomCheckCalledAet": False})
    yield plain
    plain.stop()


def start_node(env: dict[str, str]) -> Any:
    """The node as `triage serve` runs it (Prefect flows, the shipped model), on a free port."""
    from triage.app.node import start_node as start

    return start(dataclasses.replace(load_settings(env), port=0), poll_seconds=0.2, warm_up=False)


@pytest.fixture(scope="module")
def node(
    pacs: Orthanc, tmp_path_factory: pytest.TempPathFactory, prefect_harness: None
) -> Iterator[Any]:
    """The node, registered in the PACS as a modality; ``runs`` lists each triage run."""
    env = {
        "TRIAGE_HOME": str(tmp_path_factory.mktemp("node")),
        "TRIAGE_AE_TITLE": NODE_AE,
        "TRIAGE_PACS": pacs.node,
        "TRIAGE_QUIET_SECONDS": QUIET,
        "TRIAGE_DEVICE": "cpu",
        "TRIAGE_DELIVERY_BACKOFF_SECONDS": "1",
    }
    n = start_node(env)
    runs: list[tuple[str, int]] = []
    run_study = n.run_study

    def counted(study_uid: str, generation: int) -> object:
        runs.append((study_uid, generation))
        return run_study(study_uid, generation)

    n.run_study = counted
    n.runs = runs
    pacs.add_modality("triage-node", NODE_AE, "127.0.0.1", n.port)
    yield n
    pacs.delete("/modalities/triage-node")
    n.stop()


@pytest.fixture(scope="module")
def study(
    pacs: Orthanc, node: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The whole study, in Orthanc: its Orthanc ID, UID and every SOP instance UID."""
    root = tmp_path_factory.mktemp("study")
    [demo] = write_demo_studies(
        root, count=1, seed=5, shape=(96, 96, 20), spacing=(2.0, 2.0, 5.0), unanalysable=0
    )
    images = [pydicom.dcmread(p) for p in sorted(demo.folder.glob("*.dcm"))]
    axial = [ds for ds in images if "LOCALIZER" not in str(ds.get("ImageType", ""))]
    assert len(axial) < len(images), "the demo study has a scout"
    others = {**real_objects(axial[0]), **generated_objects(axial)}
    del others["this node's result SR"]  # the node's own comes back by itself
    files = [p.read_bytes() for p in sorted(demo.folder.glob("*.dcm"))]
    files += [part10(ds) for ds in others.values()]
    orthanc_id = pacs.upload(files)
    uids = [
        str(pydicom.dcmread(io.BytesIO(f), stop_before_pixels=True).SOPInstanceUID) for f in files
    ]
    yield {"id": orthanc_id, "uid": demo.study_instance_uid, "instances": uids, "kinds": others}
    pacs.delete(f"/studies/{orthanc_id}")


def node_objects(node: Any, study_uid: str) -> list[tuple[str, str]]:
    """What the node delivered for the study: (kind, SOP Instance UID), its SR and, for a
    positive study, the KOS of the key images."""
    return [
        (d.kind, d.sop_instance_uid)
        for d in node.svc.catalogue.deliveries(["delivered"])
        if d.study_instance_uid == study_uid
    ]


def node_srs(node: Any, study_uid: str) -> list[str]:
    return [uid for kind, uid in node_objects(node, study_uid) if kind == "sr"]


def assert_job_succeeded(job: Any, instances: int) -> None:
    assert job["State"] == "Success", job
    assert job["Content"].get("FailedInstancesCount", 0) == 0, job["Content"]
    assert job["Content"]["InstancesCount"] == instances, job["Content"]


def test_a_forwarded_study_is_kept_whole_and_triaged_once(
    pacs: Orthanc, node: Any, study: dict[str, Any]
) -> None:
    job = pacs.forward("triage-node", [study["id"]])
    assert_job_succeeded(job, len(study["instances"]))

    catalogue, store = node.svc.catalogue, node.svc.store
    for uid in study["instances"]:
        assert catalogue.has_instance(uid), uid
    keys = [k for k in store.keys(f"raw/{study['uid']}/")]
    assert len(keys) == len(study["instances"])
    assert node.receiver.stats.rejected == 0

    def triaged_and_delivered() -> bool:
        return catalogue.study_state(study["uid"]) == ("triaged", 1) and bool(
            node_srs(node, study["uid"])
        )

    wait_until(triaged_and_delivered, 180, "the study triaged and its SR delivered")
    assert node.runs.count((study["uid"], 1)) == 1
    assert [r for r in node.runs if r[0] == study["uid"]] == [(study["uid"], 1)]


def test_forwarding_it_again_with_the_node_sr_keeps_it_triaged(
    pacs: Orthanc, node: Any, study: dict[str, Any]
) -> None:
    [sr_uid] = node_srs(node, study["uid"])
    ours = {uid for _, uid in node_objects(node, study["uid"])}
    in_pacs = {i["MainDicomTags"]["SOPInstanceUID"] for i in pacs.instances_of_study(study["uid"])}
    assert ours <= in_pacs  # the result came back into the same study
    assert len(in_pacs) == len(study["instances"]) + len(ours)

    job = pacs.forward("triage-node", [study["id"]])
    assert_job_succeeded(job, len(study["instances"]) + len(ours))
    for uid in ours:  # the node's own SR (and KOS), kept like the rest
        assert node.svc.catalogue.has_instance(uid)
    time.sleep(3 * float(QUIET))  # long enough for a re-opened study to be triaged again
    assert node.svc.catalogue.study_state(study["uid"]) == ("triaged", 1)
    assert [r for r in node.runs if r[0] == study["uid"]] == [(study["uid"], 1)]
    assert node_srs(node, study["uid"]) == [sr_uid]


def test_each_kind_of_object_arrived_in_its_own_sop_class(
    node: Any, study: dict[str, Any], tmp_path: Path
) -> None:
    for name, ds in study["kinds"].items():
        key = f"raw/{study['uid']}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
        kept = pydicom.dcmread(io.BytesIO(node.svc.store.get(key)), stop_before_pixels=True)
        assert kept.SOPClassUID == ds.SOPClassUID, name
