"""A pushed study that announces how many instances it has is triaged as soon as they are all
here, long before its quiet period ends; a study short of its count, with counts that disagree,
with an image more than announced (after its early triage: it is re-opened), or sent to a node
with TRIAGE_COMPLETE_ON_ANNOUNCED_COUNT off, waits for the quiet period.

Real components: pynetdicom as the modality, the node as `triage serve` starts it (receiver,
catalogue, the Prefect triage flow, the shipped models) with a quiet period of a minute.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from support.factories import dose_report, phantom_ct_series
from support.nodes import node_env, running_node
from support.waiting import run_finished, wait_until

from triage.catalogue import RECEIVING
from triage.dimse import SUCCESS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUIET = 60.0
SLICES = 20  # at least the 16 the shipped models ask for: the studies are analysed
EARLY = ("every image", "study count")


def send(port: int, datasets: Sequence[Dataset]) -> None:
    """C-STORE each data set over one association, as a modality sends a study."""
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for sop_class in {str(ds.SOPClassUID) for ds in datasets}:
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="TRIAGE")
    assert assoc.is_established
    try:
        for ds in datasets:
            assert int(assoc.send_c_store(ds).Status) == SUCCESS
    finally:
        assoc.release()


def head_ct(tag: str, seed: int, **overrides: Any) -> list[Dataset]:
    series = phantom_ct_series(tag, seed, (48, 48, SLICES), (4.0, 4.0, 5.0), **overrides)
    assert all(ds.SOPClassUID == CTImageStorage for ds in series)
    return series


def one_more(series: list[Dataset]) -> Dataset:
    """An image of ``series`` that was not sent with it."""
    ds = copy.deepcopy(series[-1])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[ds.SOPInstanceUID, "one more"])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = len(series) + 1
    return ds


def announcing(series: list[Dataset], counts: Sequence[int], keyword: str) -> list[Dataset]:
    for ds, count in zip(series, counts, strict=True):
        setattr(ds, keyword, count)
    return series


def state_of(node: Any, study_uid: str) -> str:
    state = node.svc.catalogue.study_state(study_uid)
    assert state is not None, f"study {study_uid} was not received"
    return str(state[0])


@pytest.fixture(scope="module")
def sent(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> dict[str, Any]:
    """Four studies sent to a node that uses the counts: how long the early ones took from the
    last acknowledgement, and the state of each study once they had finished. (One node at a
    time: the flows run on the services of the node last started in the process.)"""
    every_image = announcing(head_ct("every", 1), [SLICES] * SLICES, "ImagesInAcquisition")
    short = announcing(head_ct("short", 2), [SLICES + 1] * SLICES, "ImagesInAcquisition")
    disagreeing = announcing(
        head_ct("disagree", 3), [SLICES] * (SLICES - 1) + [SLICES - 1], "ImagesInAcquisition"
    )
    study_uid = generate_uid(entropy_srcs=["study-count"])
    whole = [
        *head_ct("study-a", 4, study_instance_uid=study_uid),
        *head_ct("study-b", 5, study_instance_uid=study_uid, series_number=3),
        dose_report(study_uid),
    ]
    study_count = announcing(whole, [len(whole)] * len(whole), "NumberOfStudyRelatedInstances")
    studies = {
        "every image": every_image,
        "short": short,
        "disagreeing": disagreeing,
        "study count": study_count,
    }
    with running_node(node_env(tmp_path_factory.mktemp("on"), QUIET_SECONDS=str(QUIET))) as node:
        start = time.monotonic()
        for study in studies.values():
            send(node.port, study)
        acknowledged = time.monotonic()
        for name in EARLY:
            uid = studies[name][0].StudyInstanceUID
            wait_until(run_finished(node.svc.catalogue, uid), QUIET / 2, f"{name} triaged")
        finished = time.monotonic()
        triaged = {name: state_of(node, studies[name][0].StudyInstanceUID) for name in EARLY}
        send(node.port, [one_more(every_image)])  # re-opens it, one more than announced
        time.sleep(3.0)  # any study the counts would complete is claimed in this time
        states = {
            name: state_of(node, study[0].StudyInstanceUID) for name, study in studies.items()
        }
        generation = node.svc.catalogue.study_state(every_image[0].StudyInstanceUID)[1]
    return {
        "sending_s": acknowledged - start,
        "early_s": finished - acknowledged,
        "triaged": triaged,
        "after one more": (states.pop("every image"), generation),
        **states,
    }


def test_studies_with_every_announced_instance_are_triaged_well_before_the_quiet_period(
    sent: dict[str, Any],
) -> None:
    assert sent["early_s"] < QUIET / 2, f"{sent['early_s']:.1f} s after the last image"
    assert sent["triaged"] == {"every image": "triaged", "study count": "triaged"}


def test_an_image_after_an_early_triage_reopens_the_study_for_its_quiet_period(
    sent: dict[str, Any],
) -> None:
    assert sent["after one more"] == (RECEIVING, 2)


def test_a_study_short_of_its_count_or_with_disagreeing_counts_waits(
    sent: dict[str, Any],
) -> None:
    assert (sent["short"], sent["disagreeing"]) == (RECEIVING, RECEIVING)


def test_with_the_setting_off_a_complete_study_waits_for_the_quiet_period(
    tmp_path: Path, sent: dict[str, Any]
) -> None:
    study = announcing(head_ct("off", 6), [SLICES] * SLICES, "ImagesInAcquisition")
    uid = study[0].StudyInstanceUID
    env = node_env(tmp_path, QUIET_SECONDS=str(QUIET), COMPLETE_ON_ANNOUNCED_COUNT="no")
    with running_node(env) as node:
        send(node.port, study)
        time.sleep(sent["early_s"] + 3.0)  # longer than the node with the counts took
        assert node.svc.catalogue.instance_count(uid) == SLICES  # all here
        assert state_of(node, uid) == RECEIVING  # only the setting keeps it waiting
