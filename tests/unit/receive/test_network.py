"""The receiver's event-driven pynetdicom reactors (triage.receive.network): used only on the
pynetdicom they were checked against, the same protocol behaviour as stock, and stock
behaviour anywhere else."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pynetdicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification
from support.factories import phantom_ct_series

import triage.receive.network as network
from triage.catalogue import Catalogue
from triage.dimse import SUCCESS
from triage.receive.receiver import Receiver
from triage.store import LocalStore


def test_this_pynetdicom_is_the_one_the_reactors_were_checked_against() -> None:
    """Fails after an upgrade of pynetdicom until triage/receive/network.py is checked
    against it (until then the receiver runs on the stock reactors: see the next tests)."""
    assert pynetdicom.__version__ in network.CHECKED_VERSIONS, (
        f"pynetdicom {pynetdicom.__version__}: compare the functions in network.MIRRORED with "
        "triage/receive/network.py, then update MIRRORED and CHECKED_VERSIONS"
    )
    assert network.changed_since_checked() == [], (
        "these pynetdicom functions changed since triage/receive/network.py was checked "
        "against them; compare, then update MIRRORED"
    )
    assert network.prompt_reactors_supported()


def test_a_changed_function_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "dul.DULServiceProvider.stop_dul"
    monkeypatch.setitem(network.MIRRORED, name, "0" * 16)
    assert network.changed_since_checked() == [name]


@pytest.fixture(params=["prompt", "stock"])
def receiver(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Receiver, list[type]]]:
    """A receiver on the prompt reactors, and one as on an unchecked pynetdicom; with the
    class of each association it accepted."""
    if request.param == "stock":
        monkeypatch.setattr(network, "prompt_reactors_supported", lambda: False)
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'catalogue.db'}")
    rx = Receiver(LocalStore(tmp_path / "store"), catalogue, "TRIAGE")
    rx.start("127.0.0.1", 0)
    kinds: list[type] = []
    assert rx._server is not None
    rx._server.bind(evt.EVT_CONN_OPEN, lambda event: kinds.append(type(event.assoc)))
    yield rx, kinds
    rx.stop()
    catalogue.close()


def associate(port: int, network_timeout: float = 15) -> Association:
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = network_timeout
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="TRIAGE")
    assert assoc.is_established
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return assoc


def test_stores_echoes_and_releases_on_either_reactor(
    receiver: tuple[Receiver, list[type]],
) -> None:
    rx, kinds = receiver
    series = phantom_ct_series("test_network", 0, (32, 32, 12))
    assoc = associate(rx.port)
    try:
        assert [int(assoc.send_c_store(ds).Status) for ds in series] == [SUCCESS] * 12
        assert int(assoc.send_c_echo().Status) == SUCCESS
    finally:
        assoc.release()
    assert assoc.is_released
    assert rx.catalogue.counts()["instances"] == 12
    prompt = network.prompt_reactors_supported()
    assert kinds == [network.PromptAssociation if prompt else Association]


def test_several_associations_at_once(receiver: tuple[Receiver, list[type]]) -> None:
    rx, _ = receiver
    statuses: list[int] = []
    lock = threading.Lock()

    def send(seed: int) -> None:
        assoc = associate(rx.port)
        try:
            for ds in phantom_ct_series("test_network", seed, (32, 32, 6)):
                status = int(assoc.send_c_store(ds).Status)
                with lock:
                    statuses.append(status)
        finally:
            assoc.release()

    threads = [threading.Thread(target=send, args=(seed,)) for seed in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == [SUCCESS] * 24
    assert rx.catalogue.counts()["instances"] == 24


def test_a_peer_that_vanishes_ends_its_association(
    receiver: tuple[Receiver, list[type]],
) -> None:
    rx, _ = receiver
    assoc = associate(rx.port)
    assert rx._server is not None
    deadline = time.monotonic() + 10
    while not rx._server.active_associations and time.monotonic() < deadline:
        time.sleep(0.02)
    assoc.dul.socket.socket.close()  # no release, no abort: the connection just ends
    while rx._server.active_associations and time.monotonic() < deadline:
        time.sleep(0.02)
    assert rx._server.active_associations == []


def test_the_network_timeout_still_ends_an_idle_association(
    receiver: tuple[Receiver, list[type]],
) -> None:
    rx, _ = receiver
    assert rx._server is not None
    rx._server.ae.network_timeout = 0.5
    assoc = associate(rx.port, network_timeout=30)
    deadline = time.monotonic() + 10
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    assert assoc.is_aborted, "the receiver did not abort an association idle past its timeout"
