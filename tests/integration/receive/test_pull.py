"""Pull mode against Orthanc as the PACS: C-FIND new studies, retrieve by C-MOVE and by C-GET."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from support.factories import phantom_ct_series, todays_ct_study
from support.orthanc import ORTHANC, Orthanc, free_port

from triage.catalogue import Catalogue
from triage.config import parse_node
from triage.receive.pull import Puller, read_watermark
from triage.receive.query import DimseSource
from triage.receive.receiver import Receiver
from triage.store import LocalStore

pytestmark = pytest.mark.integration

NODE_AE = "TRIAGE_PULL"


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Orthanc, int]]:
    """An Orthanc that knows this node (for C-MOVE and C-GET) at a port chosen here."""
    if ORTHANC is None:
        pytest.skip("Orthanc is not installed (Debian package orthanc)")
    port = free_port()
    orthanc = Orthanc(tmp_path_factory.mktemp("pull-pacs"))
    orthanc.start(modalities={NODE_AE: (NODE_AE, "127.0.0.1", port)})
    yield orthanc, port
    orthanc.stop()


class Node:
    def __init__(self, root: Path, orthanc: Orthanc, port: int, method: str) -> None:
        self.store = LocalStore(root / "store")
        self.catalogue = Catalogue(f"sqlite:///{root / 'catalogue.db'}")
        self.receiver = Receiver(self.store, self.catalogue, NODE_AE)
        self.completed: list[str] = []
        pacs = parse_node("pacs", orthanc.node)
        assert pacs is not None
        source = DimseSource(
            pacs, NODE_AE, ("CT", "MR"), method, handle_store=self.receiver.handle_store
        )
        self.puller = Puller(source, self.store, self.catalogue, on_complete=self.completed.append)
        if method == "c-move":
            self.receiver.start("127.0.0.1", port)

    def stop(self) -> None:
        self.receiver.stop()


@pytest.mark.parametrize("method", ["c-move", "c-get"])
def test_new_studies_are_found_retrieved_and_complete_at_once(
    pacs: tuple[Orthanc, int], tmp_path: Path, method: str
) -> None:
    orthanc, port = pacs
    first, second = todays_ct_study(f"pull-{method}-1", 5), todays_ct_study(f"pull-{method}-2", 3)
    for study in (first, second):
        orthanc.store(study)
    node = Node(tmp_path, orthanc, port, method)
    try:
        summary = node.puller.poll_once()
        for study in (first, second):
            uid = study[0].StudyInstanceUID
            assert uid in summary.retrieved
            assert node.catalogue.instance_count(uid) == len(study)
            assert uid in node.completed  # NumberOfStudyRelatedInstances: no quiet period
        assert summary.failed == {}

        again = node.puller.poll_once()  # nothing new: nothing retrieved again
        assert again.retrieved == [] and again.skipped == again.found >= 2

        third = todays_ct_study(f"pull-{method}-3", 4)
        orthanc.store(third)  # added while the poller runs: picked up next poll
        later = node.puller.poll_once()
        assert later.retrieved == [third[0].StudyInstanceUID]
        assert node.catalogue.instance_count(third[0].StudyInstanceUID) == 4
    finally:
        node.stop()


def test_a_study_that_grows_on_the_pacs_is_retrieved_again(
    pacs: tuple[Orthanc, int], tmp_path: Path
) -> None:
    orthanc, port = pacs
    study = todays_ct_study("pull-grows", 6)
    orthanc.store(study[:3])
    node = Node(tmp_path, orthanc, port, "c-get")
    uid = study[0].StudyInstanceUID
    node.puller.poll_once()
    assert node.catalogue.instance_count(uid) == 3
    orthanc.store(study[3:])
    summary = node.puller.poll_once()
    assert uid in summary.retrieved
    assert node.catalogue.instance_count(uid) == 6


def test_watermark_has_an_overlap_and_old_studies_are_not_retrieved(
    pacs: tuple[Orthanc, int], tmp_path: Path
) -> None:
    orthanc, port = pacs
    old = phantom_ct_series("pull-old", shape=(24, 24, 3), study_date="20200101")
    orthanc.store(old)
    node = Node(tmp_path, orthanc, port, "c-get")
    start = datetime.now()
    summary = node.puller.poll_once(now=start)
    assert old[0].StudyInstanceUID not in summary.retrieved  # outside the look-back window
    mark = read_watermark(node.store)
    assert mark.since == start
    # a study dated just before the last poll (inside the 10-minute overlap) is still found
    boundary = start - timedelta(minutes=3)
    late = phantom_ct_series(
        "pull-boundary",
        shape=(24, 24, 3),
        study_date=boundary.strftime("%Y%m%d"),
        study_time=boundary.strftime("%H%M%S"),
    )
    orthanc.store(late)
    summary = node.puller.poll_once(now=start + timedelta(minutes=1))
    assert late[0].StudyInstanceUID in summary.retrieved


def test_pacs_down_is_reported_and_the_watermark_stays(tmp_path: Path) -> None:
    node_port = free_port()
    pacs = parse_node("pacs", f"NOBODY@127.0.0.1:{free_port()}")
    assert pacs is not None
    store = LocalStore(tmp_path / "store")
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'c.db'}")
    source = DimseSource(pacs, NODE_AE, ("CT",), "c-move")
    puller = Puller(source, store, catalogue)
    from triage.errors import DeliveryError

    with pytest.raises(DeliveryError, match="cannot (connect|reach)"):
        puller.poll_once()
    assert read_watermark(store).since is None
    assert node_port  # nothing listened; nothing was stored
    assert catalogue.counts()["instances"] == 0
