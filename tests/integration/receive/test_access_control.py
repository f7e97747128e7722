"""Who may associate with the receiver: the calling AE allow-list (TRIAGE_ALLOWED_AES), per-host
entries, the PACS always allowed, against real pynetdicom peers and dcmtk's storescu.

A refused association is rejected at association time with A-ASSOCIATE-RJ result 0x01
(rejected-permanent), source 0x01 (service user), reason 0x03 (calling AE title not recognised),
nothing is stored, and the refusal is logged with the calling AE title and the peer address.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage
from pynetdicom import AE
from pynetdicom.association import Association
from support.factories import phantom_ct_series
from support.paths import require

from triage.catalogue import Catalogue
from triage.config import AllowedAE, DicomNode, load_settings
from triage.dimse import store_datasets
from triage.errors import DeliveryError
from triage.receive.access import AccessList, allowed_callers
from triage.receive.receiver import Receiver
from triage.store import LocalStore
from triage.synthetic.series import write_series

ELSEWHERE = "192.0.2.7"  # TEST-NET-1: never the address a test connects from
CALLING_AE_NOT_RECOGNISED = (0x01, 0x01, 0x03)
CALLED_AE_NOT_RECOGNISED = (0x01, 0x01, 0x07)

StartReceiver = Callable[..., Receiver]


@pytest.fixture(scope="module")
def instance() -> Dataset:
    return phantom_ct_series("test_access_control", 0, (32, 32, 1))[0]


@pytest.fixture
def start_receiver(tmp_path: Path, stopper: list[threading.Thread]) -> Iterator[StartReceiver]:
    """Starts receivers on free ports of 127.0.0.1 (from Settings when given env)."""
    started: list[tuple[Receiver, Catalogue]] = []

    def start(allowed: str | None = None, **env: str) -> Receiver:
        home = tmp_path / f"node{len(started)}"
        if allowed is not None:
            env["TRIAGE_ALLOWED_AES"] = allowed
        home.mkdir()
        settings = load_settings({"TRIAGE_HOME": str(home), **env})
        catalogue = Catalogue(settings.database_url)
        rx = Receiver.from_settings(LocalStore(settings.store_path), catalogue, settings)
        rx.start("127.0.0.1", 0)
        started.append((rx, catalogue))
        return rx

    yield start
    for rx, catalogue in started:

        def stop(rx: Receiver = rx, catalogue: Catalogue = catalogue) -> None:
            rx.stop()
            catalogue.close()

        thread = threading.Thread(target=stop)
        thread.start()
        stopper.append(thread)


def associate(port: int, calling: str, called: str = "TRIAGE") -> Association:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
    ae.add_requested_context(CTImageStorage)
    return ae.associate("127.0.0.1", port, ae_title=called)


def rejection(assoc: Association) -> tuple[int, int, int]:
    """(result, source, reason) of the A-ASSOCIATE-RJ the requestor received."""
    assert assoc.is_rejected, "the association was not rejected"
    rj = assoc.acceptor.primitive
    assert rj is not None
    return (int(rj.result), int(rj.result_source), int(rj.diagnostic))


def store_one(port: int, calling: str, ds: Dataset) -> int:
    assoc = associate(port, calling)
    assert assoc.is_established, "the receiver refused the association"
    try:
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


def stored(rx: Receiver) -> list[str]:
    return list(rx.store.keys("raw/"))


def assert_refused(rx: Receiver, calling: str, caplog: pytest.LogCaptureFixture) -> None:
    assoc = associate(rx.port, calling)
    assert not assoc.is_established
    assert rejection(assoc) == CALLING_AE_NOT_RECOGNISED
    assert stored(rx) == []
    [record] = [r for r in caplog.records if "rejected association" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert repr(calling) in record.getMessage()
    assert "127.0.0.1" in record.getMessage()


# -- the allow-list ---------------------------------------------------------------------------


def test_unknown_calling_ae_is_rejected_with_reason_3(
    start_receiver: StartReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    rx = start_receiver("MODALITY,CT_SCANNER")
    caplog.set_level(logging.WARNING, logger="triage.receive.access")
    assert_refused(rx, "INTRUDER", caplog)
    assert rx.stats.refused_associations == 1


def test_listed_calling_ae_is_accepted_and_its_instance_stored(
    start_receiver: StartReceiver, instance: Dataset
) -> None:
    rx = start_receiver("MODALITY, CT_SCANNER")
    assert store_one(rx.port, "CT_SCANNER", instance) == 0x0000
    assert rx.catalogue.has_instance(str(instance.SOPInstanceUID))
    assert len(stored(rx)) == 1
    assert rx.stats.refused_associations == 0


def test_entry_for_another_host_is_rejected(
    start_receiver: StartReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    rx = start_receiver(f"MODALITY@{ELSEWHERE}")
    caplog.set_level(logging.WARNING, logger="triage.receive.access")
    assert_refused(rx, "MODALITY", caplog)
    assert ELSEWHERE in caplog.text  # the log says where this AE title is allowed from


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_entry_for_this_host_is_accepted(
    start_receiver: StartReceiver, instance: Dataset, host: str
) -> None:
    rx = start_receiver(f"MODALITY@{ELSEWHERE},MODALITY@{host}")
    assert store_one(rx.port, "MODALITY", instance) == 0x0000
    assert len(stored(rx)) == 1


def test_pacs_is_accepted_although_not_listed(
    start_receiver: StartReceiver, instance: Dataset
) -> None:
    rx = start_receiver("MODALITY", TRIAGE_PACS="ORTHANC@127.0.0.1:4242")
    assert store_one(rx.port, "ORTHANC", instance) == 0x0000
    assert len(stored(rx)) == 1


def test_pacs_is_accepted_only_from_its_own_host(
    start_receiver: StartReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    rx = start_receiver("MODALITY", TRIAGE_PACS=f"ORTHANC@{ELSEWHERE}:4242")
    caplog.set_level(logging.WARNING, logger="triage.receive.access")
    assert_refused(rx, "ORTHANC", caplog)


def test_listing_the_pacs_ae_title_decides_where_it_may_call_from(
    start_receiver: StartReceiver, instance: Dataset
) -> None:
    rx = start_receiver("MODALITY,ORTHANC", TRIAGE_PACS=f"ORTHANC@{ELSEWHERE}:4242")
    assert store_one(rx.port, "ORTHANC", instance) == 0x0000


def test_no_allow_list_accepts_any_calling_ae(
    start_receiver: StartReceiver, instance: Dataset
) -> None:
    rx = start_receiver(None, TRIAGE_PACS="ORTHANC@127.0.0.1:4242")
    assert rx.access.accepts_anyone
    assert store_one(rx.port, "ANY_AE_AT_ALL", instance) == 0x0000


def test_wrong_called_ae_is_rejected_with_reason_7_and_logged(
    start_receiver: StartReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    rx = start_receiver("MODALITY")
    caplog.set_level(logging.WARNING, logger="triage.receive.access")
    assoc = associate(rx.port, "MODALITY", called="NOT_TRIAGE")
    assert rejection(assoc) == CALLED_AE_NOT_RECOGNISED
    assert "'NOT_TRIAGE'" in caplog.text and "'MODALITY'" in caplog.text


def test_receiver_still_accepts_after_refusals(
    start_receiver: StartReceiver, instance: Dataset
) -> None:
    rx = start_receiver("MODALITY")
    for _ in range(3):
        assert rejection(associate(rx.port, "INTRUDER")) == CALLING_AE_NOT_RECOGNISED
    assert store_one(rx.port, "MODALITY", instance) == 0x0000
    assert rx.stats.refused_associations == 3


def test_receiver_built_without_settings_accepts_anyone(tmp_path: Path) -> None:
    """Code that builds Receiver(store, catalogue, ae_title) keeps working as before."""
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        rx = Receiver(LocalStore(tmp_path / "s"), catalogue, "TRIAGE")
        assert rx.access.accepts_anyone and rx.tls is None
    finally:
        catalogue.close()


# -- the project's own sender and dcmtk's storescu --------------------------------------------


def test_our_sender_with_an_unknown_calling_ae_gets_a_clear_error(
    start_receiver: StartReceiver, instance: Dataset
) -> None:
    rx = start_receiver("MODALITY")
    node = DicomNode("TRIAGE", "127.0.0.1", rx.port)
    with pytest.raises(DeliveryError, match="rejected the association.*INTRUDER"):
        store_datasets(node, [instance], "INTRUDER", timeout=15)
    assert store_datasets(node, [instance], "MODALITY", timeout=15) == [0x0000]


def storescu(port: int, calling: str, files: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require("storescu"), "-aet", calling, "-aec", "TRIAGE", "127.0.0.1", str(port)]
        + [str(f) for f in files],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TCP_NODELAY": "1"},
        check=False,
    )


@pytest.mark.integration
def test_storescu_with_a_wrong_calling_ae_fails_and_the_right_one_succeeds(
    start_receiver: StartReceiver, instance: Dataset, tmp_path: Path
) -> None:
    rx = start_receiver("MODALITY")
    files = write_series([instance], tmp_path / "files")
    refused = storescu(rx.port, "INTRUDER", files)
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stdout + refused.stderr
    assert stored(rx) == []
    accepted = storescu(rx.port, "MODALITY", files)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert rx.catalogue.has_instance(str(instance.SOPInstanceUID))


# -- the access list on its own ---------------------------------------------------------------


def test_ipv4_mapped_peer_matches_its_ipv4_entry() -> None:
    access = AccessList([AllowedAE("CT", "10.0.0.7")])
    assert access.refusal("CT", "::ffff:10.0.0.7") is None
    assert access.refusal("CT", "10.0.0.8") is not None


def test_unresolvable_host_name_matches_nobody() -> None:
    access = AccessList([AllowedAE("CT", "no-such-host.invalid")])
    assert access.refusal("CT", "127.0.0.1") is not None


def test_ae_titles_match_exactly() -> None:
    access = AccessList([AllowedAE("CT")])
    assert access.refusal("CT", "127.0.0.1") is None
    assert access.refusal("ct", "127.0.0.1") is not None
    assert access.refusal("CT2", "127.0.0.1") is not None


def test_allowed_callers_adds_the_pacs_bound_to_its_host(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "TRIAGE_HOME": str(tmp_path),
            "TRIAGE_ALLOWED_AES": "CT",
            "TRIAGE_PACS": "PACS@pacs.example:104",
        }
    )
    assert allowed_callers(settings) == (AllowedAE("CT"), AllowedAE("PACS", "pacs.example"))


def test_allowed_callers_is_empty_without_a_list(tmp_path: Path) -> None:
    settings = load_settings({"TRIAGE_HOME": str(tmp_path), "TRIAGE_PACS": "PACS@h:104"})
    assert allowed_callers(settings) == ()
