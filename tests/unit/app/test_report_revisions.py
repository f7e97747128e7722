"""Current results in any PACS: a changed result is a new revision that names the one it
replaces; the same result is the same document; a lower priority waits for a person; a study
that could not be analysed gets a document that says so. Through the pipeline's own report and
finish steps, over a real store and catalogue (no model runs: the results are given)."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from support.factories import phantom_ct_series

from triage.analysis.evidence import keep_lesion
from triage.app import pipeline
from triage.app.services import Services
from triage.catalogue import Catalogue, ReportRevision, RevisionState
from triage.config import load_settings
from triage.dimse import SUCCESS
from triage.errors import StorageError
from triage.receive.receiver import Receiver
from triage.report.sr_read import read_document
from triage.results import ModelResult, Priority
from triage.store import LocalStore

MODEL, VERSION = "ich-detector", "1.0.0"


class Node:
    """The store, catalogue and settings of a node that reports to a PACS (never contacted)."""

    def __init__(self, home: Path, **env: str) -> None:
        settings = load_settings(
            {"TRIAGE_HOME": str(home), "TRIAGE_PACS": "PACS@127.0.0.1:1", **env}
        )
        self.svc = Services(
            settings, LocalStore(settings.store_path), Catalogue(settings.database_url)
        )
        self.receiver = Receiver(self.svc.store, self.svc.catalogue, "TRIAGE")

    def receive(self, images: list[Dataset]) -> None:
        for ds in images:
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            assert self.receiver.accept(buffer.getvalue()) == SUCCESS

    def run(self, study: str, *analyses: pipeline.Analysis) -> Priority:
        """One triage run with these outcomes, as the flow records it."""
        generation = self.svc.catalogue.claim_for_triage(study)
        assert generation is not None
        plan = pipeline.report(self.svc, study, list(analyses))
        return pipeline.finish(self.svc, study, generation, list(analyses), plan, {})

    def rerun(self, study: str, *analyses: pipeline.Analysis) -> Priority:
        assert self.svc.catalogue.reopen(study)
        return self.run(study, *analyses)

    def documents(self, study: str) -> list[Dataset]:
        """The SRs queued for the PACS, in the order they were queued."""
        rows = [r for r in self.svc.catalogue.deliveries() if r.study_instance_uid == study]
        return [pydicom.dcmread(io.BytesIO(self.svc.store.get(r.key))) for r in rows]

    def row(self, study: str) -> object:
        (row,) = [r for r in self.svc.catalogue.worklist() if r.study_instance_uid == study]
        return row


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    made = Node(tmp_path / "home")
    yield made
    made.svc.catalogue.close()


def study_images(slices: int = 4, **overrides: object) -> list[Dataset]:
    return phantom_ct_series("revisions", shape=(16, 16, slices), **overrides)


def analysed(images: list[Dataset], probability: float) -> pipeline.Analysis:
    series = str(images[0].SeriesInstanceUID)
    result = ModelResult(
        MODEL,
        VERSION,
        codes.SCT.IntracranialHemorrhage,
        probability,
        0.5,
        Priority.URGENT if probability >= 0.5 else Priority.ROUTINE,
        series,
    )
    return pipeline.Analysis(MODEL, result, model_version=VERSION, series_instance_uid=series)


def not_analysed(reason: str) -> pipeline.Analysis:
    return pipeline.Analysis(MODEL, None, reason, model_version=VERSION)


def test_late_images_that_change_the_result_make_a_revision_naming_the_first(node: Node) -> None:
    images = study_images(6)
    study = str(images[0].StudyInstanceUID)
    node.receive(images[:4])
    assert node.run(study, analysed(images[:4], 0.2)) is Priority.ROUTINE
    node.receive(images[4:])  # the upper slices arrive after the quiet period
    assert node.run(study, analysed(images, 0.96)) is Priority.URGENT

    first, second = node.documents(study)
    assert first.SeriesInstanceUID == second.SeriesInstanceUID  # the model's SR series
    assert (first.InstanceNumber, second.InstanceNumber) == (1, 2)
    assert second.SOPInstanceUID != first.SOPInstanceUID
    now = read_document(second)
    assert now.predecessors == (first.SOPInstanceUID,)
    assert now.findings[0].priority is Priority.URGENT
    assert str(second.ContentDate) + str(second.ContentTime) >= (
        str(first.ContentDate) + str(first.ContentTime)
    )
    assert node.row(study).priority == "urgent"  # type: ignore[attr-defined]


def test_the_same_result_again_sends_nothing_new(node: Node) -> None:
    images = study_images()
    study = str(images[0].StudyInstanceUID)
    node.receive(images)
    node.run(study, analysed(images, 0.9))
    node.rerun(study, analysed(images, 0.9))  # a retry, `triage rerun`, a restart
    (only,) = node.documents(study)
    assert only.InstanceNumber == 1
    assert len(node.svc.catalogue.deliveries()) == 1


def test_a_downgrade_waits_for_a_person_and_then_goes_out_as_a_revision(node: Node) -> None:
    images = study_images()
    study = str(images[0].StudyInstanceUID)
    node.receive(images)
    node.run(study, analysed(images, 0.9))
    assert node.rerun(study, analysed(images, 0.1)) is Priority.ROUTINE  # e.g. a new version

    row = node.row(study)
    assert row.priority == "urgent" and row.held_priority == "routine"  # type: ignore[attr-defined]
    (urgent,) = node.documents(study)  # nothing lower reached the PACS
    assert read_document(urgent).findings[0].priority is Priority.URGENT

    done = node.svc.catalogue.acknowledge(study, who="dr house", reason="reviewed: no bleed")
    assert (done.from_priority, done.to_priority, done.who) == ("urgent", "routine", "dr house")
    first, second = node.documents(study)
    assert read_document(second).predecessors == (first.SOPInstanceUID,)
    assert read_document(second).findings[0].priority is Priority.ROUTINE
    row = node.row(study)
    assert row.priority == "routine" and row.held_priority is None  # type: ignore[attr-defined]
    (audit,) = node.svc.catalogue.acknowledgements()
    assert audit.study_instance_uid == study and audit.reason == "reviewed: no bleed"
    with pytest.raises(StorageError, match="no lower priority waiting"):
        node.svc.catalogue.acknowledge(study, who="dr house", reason="again")


def test_a_held_downgrade_overtaken_by_the_first_result_is_never_sent(node: Node) -> None:
    images = study_images()
    study = str(images[0].StudyInstanceUID)
    node.receive(images)
    node.run(study, analysed(images, 0.9))
    node.rerun(study, analysed(images, 0.1))  # held
    node.rerun(study, analysed(images, 0.9))  # back to what the PACS shows
    assert len(node.documents(study)) == 1
    row = node.row(study)
    assert row.priority == "urgent" and row.held_priority is None  # type: ignore[attr-defined]
    with pytest.raises(StorageError, match="no lower priority waiting"):
        node.svc.catalogue.acknowledge(study, who="someone", reason="nothing to accept")
    with node.svc.catalogue.session() as s:
        states = sorted(r.state for r in s.query(ReportRevision))
    assert states == [RevisionState.DISCARDED, RevisionState.RELEASED]


def test_an_upgrade_goes_out_at_once_even_while_a_downgrade_is_held(node: Node) -> None:
    images = study_images()
    study = str(images[0].StudyInstanceUID)
    node.receive(images)
    node.run(study, analysed(images, 0.6))
    node.rerun(study, analysed(images, 0.1))  # held
    node.rerun(study, analysed(images, 0.97))  # more certain than ever: no person needed
    first, second = node.documents(study)
    assert read_document(second).predecessors == (first.SOPInstanceUID,)
    assert read_document(second).findings[0].probability == pytest.approx(0.97)
    assert node.row(study).held_priority is None  # type: ignore[attr-defined]


def test_holding_downgrades_can_be_switched_off(tmp_path: Path) -> None:
    node = Node(tmp_path / "home", TRIAGE_HOLD_DOWNGRADES="false")
    images = study_images()
    study = str(images[0].StudyInstanceUID)
    node.receive(images)
    node.run(study, analysed(images, 0.9))
    node.rerun(study, analysed(images, 0.1))
    assert node.row(study).priority == "routine"  # type: ignore[attr-defined]
    assert len(node.documents(study)) == 2


def test_not_analysed_is_a_document_and_a_later_result_replaces_it(node: Node) -> None:
    scout = study_images(2, series_description="Scout", image_type=["ORIGINAL", "LOCALIZER"])
    study = str(scout[0].StudyInstanceUID)
    node.receive(scout)
    reason = "no series matches the model's rules (series 2 (CT): image type LOCALIZER)"
    assert node.run(study, not_analysed(reason)) is Priority.NOT_ANALYSED
    (said,) = node.documents(study)
    (finding,) = read_document(said).findings
    assert finding.priority is Priority.NOT_ANALYSED and finding.reason == reason
    assert (finding.model_name, finding.model_version) == (MODEL, VERSION)
    assert said.StudyInstanceUID == study

    axial = study_images(4, study_instance_uid=study, series_number=3)
    node.receive(axial)
    assert node.rerun(study, analysed(axial, 0.2)) is Priority.ROUTINE
    first, second = node.documents(study)
    assert read_document(second).predecessors == (first.SOPInstanceUID,)
    assert second.InstanceNumber == 2


def test_a_study_no_model_could_look_at_says_so_for_the_node(node: Node) -> None:
    images = study_images()
    study = str(images[0].StudyInstanceUID)
    node.receive(images)
    node.run(study, pipeline.Analysis("", None, "no active model on this node"))
    (said,) = node.documents(study)
    (finding,) = read_document(said).findings
    assert finding.priority is Priority.NOT_ANALYSED
    assert finding.reason == "no active model on this node"


def test_a_stale_run_records_no_revision(node: Node) -> None:
    images = study_images()
    study = str(images[0].StudyInstanceUID)
    node.receive(images[:3])
    generation = node.svc.catalogue.claim_for_triage(study)
    assert generation is not None
    stale = [analysed(images[:3], 0.9)]
    plan = pipeline.report(node.svc, study, stale)
    node.receive(images[3:])  # a late image: the study moves on while this run writes
    pipeline.finish(node.svc, study, generation, stale, plan, {})
    assert node.documents(study) == []
    assert node.svc.catalogue.chain_heads(study) == {}


def test_a_model_version_change_is_a_revision_in_the_same_series(node: Node) -> None:
    images = study_images()
    study = str(images[0].StudyInstanceUID)
    node.receive(images)
    node.run(study, analysed(images, 0.7))
    newer = analysed(images, 0.8)
    assert newer.result is not None
    newer = dataclasses.replace(
        newer,
        model_version="2.0.0",
        result=dataclasses.replace(newer.result, model_version="2.0.0"),
    )
    node.rerun(study, newer)
    first, second = node.documents(study)
    assert second.SeriesInstanceUID == first.SeriesInstanceUID
    assert read_document(second).findings[0].model_version == "2.0.0"


KOS = "1.2.840.10008.5.1.4.1.1.88.59"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"


def with_evidence(analysis: pipeline.Analysis, **fields: object) -> pipeline.Analysis:
    assert analysis.result is not None
    return dataclasses.replace(analysis, result=dataclasses.replace(analysis.result, **fields))


def test_a_positive_finding_goes_with_a_kos_pointing_at_the_key_slice(node: Node) -> None:
    images = study_images(6)
    study = str(images[0].StudyInstanceUID)
    node.receive(images)
    target = images[4]
    point = tuple(float(v) for v in target.ImagePositionPatient)
    node.run(study, with_evidence(analysed(images, 0.9), key_point_lps=point))
    sr, kos = node.documents(study)
    assert (sr.SOPClassUID, kos.SOPClassUID) == ("1.2.840.10008.5.1.4.1.1.88.34", KOS)
    assert kos.InstanceNumber == sr.InstanceNumber == 1
    assert kos.StudyInstanceUID == study and kos.SeriesInstanceUID != sr.SeriesInstanceUID
    evidence = kos.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert [i.ReferencedSOPInstanceUID for i in evidence.ReferencedSOPSequence] == [
        target.SOPInstanceUID
    ]
    node.rerun(study, with_evidence(analysed(images, 0.9), key_point_lps=point))
    assert len(node.documents(study)) == 2  # the same result: the same SR and KOS, once


def test_a_segmentation_finding_goes_with_a_seg_on_the_source_slices(node: Node) -> None:
    images = study_images(6)
    study = str(images[0].StudyInstanceUID)
    node.receive(images)
    # a lesion mask on the source grid itself: voxel (i, j, k) -> the source slice k
    first = np.asarray([float(v) for v in images[0].ImagePositionPatient])
    last = np.asarray([float(v) for v in images[-1].ImagePositionPatient])
    dy, dx = (float(v) for v in images[0].PixelSpacing)
    affine = np.eye(4)
    affine[:3, 0] = [dx, 0, 0]
    affine[:3, 1] = [0, dy, 0]
    affine[:3, 2] = (last - first) / (len(images) - 1)
    affine[:3, 3] = first
    mask = np.zeros((int(images[0].Columns), int(images[0].Rows), len(images)), dtype=bool)
    mask[5:9, 6:10, 2:4] = True
    key = keep_lesion(node.svc.store, study, MODEL, mask, affine)
    centre = tuple(float(v) for v in (affine @ [7, 8, 2.5, 1])[:3])
    node.run(
        study,
        with_evidence(
            analysed(images, 0.9),
            lesion_mask_key=key,
            lesion_volume_ml=0.1,
            lesion_centre_lps=centre,
            key_point_lps=centre,
        ),
    )
    documents = {d.SOPClassUID: d for d in node.documents(study)}
    seg = documents[SEG]
    assert seg.FrameOfReferenceUID == images[0].FrameOfReferenceUID
    positions = {
        tuple(round(float(v), 3) for v in f.PlanePositionSequence[0].ImagePositionPatient)
        for f in seg.PerFrameFunctionalGroupsSequence
    }
    assert positions == {
        tuple(round(float(v), 3) for v in images[k].ImagePositionPatient) for k in (2, 3)
    }
    assert seg.InstanceNumber == documents["1.2.840.10008.5.1.4.1.1.88.34"].InstanceNumber
