"""What a PACS forwards with a study is kept and does not disturb triage.

Secondary captures, dose reports, presentation states, key object selections, SRs and this
node's own result SR: each is accepted over a real association in its own SOP class and
transfer syntax, stored as it came (byte for byte), catalogued, and a study that is already
triaged stays triaged (same state, generation and arrival time: no new triage run). The rule is
``Catalogue.record_instance``'s; test_accepted_classes.py covers what is accepted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from sqlalchemy import select
from support.factories import phantom_ct_series
from support.forwarded import REAL_FILES, generated_objects, part10, real_objects
from support.paths import SHARED_DATA
from support.receivers import (
    as_sent,
    data_set_bytes,
    open_receiver,
    stop_later,
    stored,
    stored_bytes,
)
from support.scu import store

from triage.catalogue import Study
from triage.dimse import SUCCESS
from triage.receive.receiver import Receiver, describe_instance
from triage.results import Priority


@pytest.fixture(scope="module")
def images() -> list[Dataset]:
    return phantom_ct_series("test_forwarded", 0, (32, 32, 4))


@pytest.fixture(scope="module")
def forwarded(images: list[Dataset]) -> dict[str, Dataset]:
    return {**real_objects(images[0]), **generated_objects(images)}


@pytest.fixture
def receiver(tmp_path: Path, stopper: list[threading.Thread]) -> Iterator[Receiver]:
    rx = open_receiver(tmp_path)
    yield rx
    stop_later(stopper, rx)


def triage_once(rx: Receiver, study_uid: str) -> None:
    """What the node does when the study is quiet: claim it, record a routine result."""
    generation = rx.catalogue.claim_for_triage(study_uid)
    assert generation == 1
    assert rx.catalogue.finish_triage(study_uid, generation, [], Priority.ROUTINE, None)


def last_instance_at(rx: Receiver, study_uid: str) -> datetime:
    with rx.catalogue.session() as s:
        when = s.scalar(select(Study.last_instance_at).where(Study.study_instance_uid == study_uid))
    assert when is not None
    return when


NAMES = [*REAL_FILES, "exam summary (secondary capture)", "dose report (RDSR)"]
NAMES += ["presentation state", "key object selection", "this node's result SR"]


@pytest.mark.parametrize("name", NAMES)
def test_a_forwarded_object_is_kept_and_leaves_a_triaged_study_alone(
    receiver: Receiver, images: list[Dataset], forwarded: dict[str, Dataset], name: str
) -> None:
    if name in REAL_FILES and not SHARED_DATA.is_dir():
        pytest.skip(f"real DICOM data not found at {SHARED_DATA}")
    study = str(images[0].StudyInstanceUID)
    assert store(receiver.port, images) == [SUCCESS] * len(images)
    triage_once(receiver, study)
    before = last_instance_at(receiver, study)
    ds = forwarded[name]

    assert store(receiver.port, [ds]) == [SUCCESS]

    assert data_set_bytes(stored_bytes(receiver, ds)) == as_sent(ds)  # byte for byte
    kept = stored(receiver, ds)
    assert kept.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert kept.SOPClassUID == ds.SOPClassUID
    assert receiver.catalogue.has_instance(str(ds.SOPInstanceUID))
    series = {s.series_instance_uid: s for s in receiver.catalogue.series_of(study)}
    assert series[str(ds.SeriesInstanceUID)].modality == ds.Modality
    assert receiver.catalogue.study_state(study) == ("triaged", 1)
    assert last_instance_at(receiver, study) == before
    assert receiver.catalogue.quiet_studies(0.0) == []  # nothing to triage again
    assert receiver.stats.stored == len(images) + 1


def test_the_whole_forward_twice_stores_each_object_once(
    receiver: Receiver, images: list[Dataset], forwarded: dict[str, Dataset]
) -> None:
    study = str(images[0].StudyInstanceUID)
    everything = [*images, *forwarded.values()]
    assert store(receiver.port, everything) == [SUCCESS] * len(everything)
    triage_once(receiver, study)
    assert store(receiver.port, everything) == [SUCCESS] * len(everything)
    assert receiver.stats.duplicates == len(everything)
    assert receiver.catalogue.counts()["instances"] == len(everything)
    assert receiver.catalogue.study_state(study) == ("triaged", 1)


def test_a_late_image_still_reopens_the_study(
    receiver: Receiver, images: list[Dataset], forwarded: dict[str, Dataset]
) -> None:
    study = str(images[0].StudyInstanceUID)
    assert store(receiver.port, images[:3]) == [SUCCESS] * 3
    triage_once(receiver, study)
    assert store(receiver.port, [forwarded["dose report (RDSR)"]]) == [SUCCESS]
    assert receiver.catalogue.study_state(study) == ("triaged", 1)
    assert store(receiver.port, images[3:]) == [SUCCESS]
    assert receiver.catalogue.study_state(study) == ("receiving", 2)


def test_forwarded_objects_while_receiving_extend_the_quiet_period(
    receiver: Receiver, images: list[Dataset], forwarded: dict[str, Dataset]
) -> None:
    study = str(images[0].StudyInstanceUID)
    assert store(receiver.port, images) == [SUCCESS] * len(images)
    after_images = last_instance_at(receiver, study)
    assert store(receiver.port, [forwarded["presentation state"]]) == [SUCCESS]
    assert last_instance_at(receiver, study) > after_images
    assert receiver.catalogue.study_state(study) == ("receiving", 1)


def test_an_object_arriving_during_the_triage_run_does_not_void_it(
    receiver: Receiver, images: list[Dataset], forwarded: dict[str, Dataset]
) -> None:
    study = str(images[0].StudyInstanceUID)
    assert store(receiver.port, images) == [SUCCESS] * len(images)
    generation = receiver.catalogue.claim_for_triage(study)
    assert generation == 1
    assert store(receiver.port, [forwarded["key object selection"]]) == [SUCCESS]
    assert receiver.catalogue.study_state(study) == ("triaging", 1)
    assert receiver.catalogue.finish_triage(study, generation, [], Priority.ROUTINE, None)
    assert receiver.catalogue.study_state(study) == ("triaged", 1)


def test_a_study_first_seen_through_an_sr_starts_receiving(
    receiver: Receiver, forwarded: dict[str, Dataset]
) -> None:
    sr = forwarded["dose report (RDSR)"]
    assert store(receiver.port, [sr]) == [SUCCESS]
    assert receiver.catalogue.study_state(str(sr.StudyInstanceUID)) == ("receiving", 1)


def test_reconciling_a_stored_sr_leaves_the_triaged_study_alone(
    receiver: Receiver, images: list[Dataset], forwarded: dict[str, Dataset]
) -> None:
    study = str(images[0].StudyInstanceUID)
    assert store(receiver.port, images) == [SUCCESS] * len(images)
    triage_once(receiver, study)
    sr = forwarded["this node's result SR"]
    record = describe_instance(sr, str(sr.file_meta.TransferSyntaxUID), 0)
    assert record.triage_input is False
    receiver.store.put(record.key, part10(sr))  # stored, then the catalogue write was lost
    assert receiver.reconcile() == 1
    assert receiver.catalogue.study_state(study) == ("triaged", 1)
