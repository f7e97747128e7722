"""What a radiologist reading from the PACS sees is current: against a real Orthanc in its
**default** configuration (the first copy of an instance wins, as in most PACS) and again with
overwriting on. dcmtk's storescu is the modality; the node runs the shipped model.

- late images that turn routine into urgent leave the urgent SR as the current one (highest
  InstanceNumber in the model's SR series) with the routine one as its predecessor;
- a re-run with the same result adds nothing;
- a study with nothing to analyse gets a document that says so;
- a downgrade keeps the study urgent, in the PACS too, until a person accepts it;
- every SR passes dciodvfy with no error and reads back with highdicom.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from support.dicom_checks import assert_dciodvfy_clean
from support.modality import storescu
from support.nodes import node_env, running_node
from support.orthanc import ORTHANC, Orthanc, srs_in_orthanc
from support.paths import PROJECT_ROOT
from support.waiting import wait_until

from triage.app.demo import write_demo_studies
from triage.app.node import TriageNode
from triage.report.sr_read import SrDocument, read_document
from triage.results import Priority
from triage.synthetic.phantom import head_phantom
from triage.synthetic.series import ct_series, write_series

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module", params=["default", "overwrite"])
def pacs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Orthanc]:
    if ORTHANC is None:
        pytest.skip("Orthanc is not installed (Debian package orthanc)")
    orthanc = Orthanc(tmp_path_factory.mktemp(f"pacs-{request.param}"))
    if request.param == "default":
        orthanc.start(defaults=True)
        assert orthanc.get("/system")["Name"]  # reachable as a user runs it
    else:
        orthanc.start()  # the tuned configuration: OverwriteInstances true
    yield orthanc
    orthanc.stop()


@pytest.fixture(scope="module")
def node(
    pacs: Orthanc, tmp_path_factory: pytest.TempPathFactory, prefect_harness: None
) -> Iterator[TriageNode]:
    env = node_env(tmp_path_factory.mktemp("node"), pacs.node, QUIET_SECONDS="1.5")
    with running_node(env) as started:
        yield started


def documents(pacs: Orthanc, study_uid: str, tmp_path: Path) -> list[tuple[Dataset, SrDocument]]:
    """The study's SRs in the PACS, oldest revision first; each checked by dciodvfy."""
    out = []
    for i, instance in enumerate(srs_in_orthanc(pacs, study_uid)):
        data = pacs.instance_file(instance["ID"])
        path = tmp_path / f"sr-{i}.dcm"
        path.write_bytes(data)
        assert_dciodvfy_clean(path)
        ds = pydicom.dcmread(io.BytesIO(data))
        out.append((ds, read_document(ds)))
    return sorted(out, key=lambda d: d[1].instance_number)


def current(pacs: Orthanc, study_uid: str, tmp_path: Path) -> SrDocument:
    """What a viewer shows: the highest InstanceNumber in the SR series."""
    return documents(pacs, study_uid, tmp_path)[-1][1]


def settled(node: TriageNode, study_uid: str) -> bool:
    state = node.svc.catalogue.study_state(study_uid)
    pending = [
        d for d in node.svc.catalogue.deliveries(["pending"]) if d.study_instance_uid == study_uid
    ]
    return state is not None and state[0] in ("triaged", "not analysed") and not pending


def lesion_study(root: Path) -> tuple[list[Path], list[Path]]:
    """A head CT whose lesion lies in its upper slices: (lower slices without it, the rest)."""
    for seed in range(40):
        rng = np.random.default_rng(seed)
        phantom = head_phantom(rng, (128, 128, 40), (1.8, 1.8, 4.0), True, lesion_radius_mm=14.0)
        slices = np.flatnonzero(phantom.lesion_mask.any(axis=(0, 1)))
        if slices.size and slices.min() >= 26:
            break
    else:
        raise AssertionError("no phantom with its lesion high enough")
    study = generate_uid()
    images = ct_series(
        phantom.hu,
        phantom.spacing,
        study_instance_uid=study,
        series_instance_uid=generate_uid(),
        patient_id="LATE-1",
        patient_name="Late^Images",
        accession_number="LATE1",
        study_description="CT HEAD WITHOUT CONTRAST",
        series_description="Head 4mm",
        series_number=2,
        study_date="20261201",
        study_time="101500",
    )
    cut = int(slices.min()) - 4
    return write_series(images[:cut], root / "lower"), write_series(images[cut:], root / "upper")


def send(paths: list[Path], folder: Path, port: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        shutil.copy(path, folder / path.name)
    sent = storescu(folder, port)
    assert sent.returncode == 0, sent.stdout + sent.stderr


def test_late_images_make_the_urgent_result_current_with_the_routine_one_before_it(
    node: TriageNode, pacs: Orthanc, tmp_path: Path
) -> None:
    lower, upper = lesion_study(tmp_path / "study")
    study = str(pydicom.dcmread(lower[0]).StudyInstanceUID)
    send(lower, tmp_path / "first", node.port)
    wait_until(lambda: settled(node, study), 120, "the partial study's result in the PACS")
    (first,) = documents(pacs, study, tmp_path)
    assert first[1].findings[0].priority is Priority.ROUTINE, "the lower slices show no lesion"

    send(upper, tmp_path / "late", node.port)  # after the quiet period: the study re-opens
    wait_until(
        lambda: settled(node, study) and len(srs_in_orthanc(pacs, study)) == 2,
        120,
        "the whole study's result in the PACS",
    )
    (old, before), (new, now) = documents(pacs, study, tmp_path)
    assert now.findings[0].priority is Priority.URGENT
    assert now.predecessors == (before.sop_instance_uid,)
    assert (before.instance_number, now.instance_number) == (1, 2)
    assert new.SeriesInstanceUID == old.SeriesInstanceUID
    assert current(pacs, study, tmp_path).findings[0].priority is Priority.URGENT
    (row,) = [r for r in node.svc.catalogue.worklist() if r.study_instance_uid == study]
    assert row.priority == "urgent" and row.delivery == "delivered"

    # the same result again (a retry, `triage rerun`): nothing new reaches the PACS
    outbox = len(node.svc.catalogue.deliveries())
    assert node.svc.catalogue.reopen(study)
    wait_until(lambda: settled(node, study), 120, "the re-run")
    assert len(srs_in_orthanc(pacs, study)) == 2
    assert len(node.svc.catalogue.deliveries()) == outbox


def test_a_study_with_nothing_to_analyse_gets_a_document_that_says_so(
    node: TriageNode, pacs: Orthanc, tmp_path: Path
) -> None:
    (study,) = write_demo_studies(tmp_path / "studies", count=0, unanalysable=1, seed=4)
    send(sorted(study.folder.glob("*.dcm")), tmp_path / "send", node.port)
    uid = study.study_instance_uid
    wait_until(lambda: settled(node, uid) and srs_in_orthanc(pacs, uid), 120, "the document")
    (only,) = documents(pacs, uid, tmp_path)
    (finding,) = only[1].findings
    assert finding.priority is Priority.NOT_ANALYSED
    assert finding.model_name == "ich_classifier"
    assert "fewer than" in (finding.reason or "") or "no series" in (finding.reason or "")
    assert only[0].StudyInstanceUID == uid


def test_a_downgrade_stays_urgent_in_the_pacs_until_a_person_accepts_it(
    node: TriageNode, pacs: Orthanc, tmp_path: Path
) -> None:
    lower, upper = lesion_study(tmp_path / "study")
    study = str(pydicom.dcmread(lower[0]).StudyInstanceUID)
    send([*lower, *upper], tmp_path / "send", node.port)
    wait_until(lambda: settled(node, study), 120, "the urgent result")
    assert current(pacs, study, tmp_path).findings[0].priority is Priority.URGENT

    # a new model version that is far stricter: the re-run says routine
    strict = tmp_path / "ich_classifier"
    shutil.copytree(PROJECT_ROOT / "models" / "ich_classifier", strict)
    options = json.loads((strict / "triage.json").read_text())
    options["threshold"] = 0.99999
    (strict / "triage.json").write_text(json.dumps(options))
    registry = node.svc.lifecycle
    assert registry is not None
    info, _ = registry.register(strict, by="test", reason="a stricter operating point")
    registry.activate(info.name, info.version, by="test", reason="downgrade test")
    try:
        assert node.svc.catalogue.reopen(study)
        wait_until(lambda: settled(node, study), 120, "the re-run")
        (row,) = [r for r in node.svc.catalogue.worklist() if r.study_instance_uid == study]
        assert (row.priority, row.held_priority) == ("urgent", "routine")
        assert len(srs_in_orthanc(pacs, study)) == 1  # nothing lower reached the PACS
        assert current(pacs, study, tmp_path).findings[0].priority is Priority.URGENT

        node.svc.catalogue.acknowledge(study, who="dr test", reason="reviewed: no bleed")
        wait_until(lambda: len(srs_in_orthanc(pacs, study)) == 2, 60, "the accepted result")
        (_, urgent), (_, routine) = documents(pacs, study, tmp_path)
        assert routine.predecessors == (urgent.sop_instance_uid,)
        assert routine.findings[0].priority is Priority.ROUTINE
        assert routine.findings[0].model_version == info.version
        (row,) = [r for r in node.svc.catalogue.worklist() if r.study_instance_uid == study]
        assert (row.priority, row.held_priority) == ("routine", None)
    finally:
        registry.rollback("ich_classifier", by="test", reason="back to the shipped version")
