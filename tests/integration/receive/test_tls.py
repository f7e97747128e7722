"""DICOM TLS: the receiver with TRIAGE_TLS_CERT/KEY (TLS only) and TRIAGE_TLS_CA (mutual TLS),
and the result sender with TRIAGE_PACS_TLS, against real peers (pynetdicom, dcmtk's storescu,
Orthanc). Certificates are made at test time by tests/tls_certs.py.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage
from pynetdicom import AE
from pynetdicom.association import Association
from support.factories import phantom_ct_series
from support.paths import require
from support.tls_certs import OPENSSL, Identity, Pki, make_pki

from triage.catalogue import Catalogue
from triage.config import DicomNode, Settings, load_settings
from triage.deliver.outbox import deliver_due
from triage.dimse import store_datasets
from triage.errors import ConfigError, DeliveryError
from triage.receive.receiver import Receiver, describe_instance
from triage.receive.tls import MINIMUM_VERSION, receiver_context, sender_context
from triage.store import LocalStore
from triage.synthetic.series import write_series

pytestmark = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")

StartReceiver = Callable[..., Receiver]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def instance() -> Dataset:
    return phantom_ct_series("test_tls", 0, (32, 32, 1))[0]


def tls_env(pki: Pki, mutual: bool) -> dict[str, str]:
    env = {"TRIAGE_TLS_CERT": str(pki.node.cert), "TRIAGE_TLS_KEY": str(pki.node.key)}
    if mutual:
        env["TRIAGE_TLS_CA"] = str(pki.ca)
    return env


def settings_for(home: Path, **env: str) -> Settings:
    home.mkdir(parents=True, exist_ok=True)
    return load_settings({"TRIAGE_HOME": str(home), **env})


@pytest.fixture
def start_receiver(
    tmp_path: Path, stopper: list[threading.Thread], pki: Pki
) -> Iterator[StartReceiver]:
    started: list[tuple[Receiver, Catalogue]] = []

    def start(mutual: bool, **env: str) -> Receiver:
        settings = settings_for(tmp_path / f"node{len(started)}", **tls_env(pki, mutual), **env)
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


def client_context(pki: Pki, identity: Identity | None) -> ssl.SSLContext:
    """A modality's TLS: trusts the hospital CA, presents `identity` when given."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    if identity is not None:
        context.load_cert_chain(identity.cert, identity.key)
    return context


def associate(port: int, tls: ssl.SSLContext | None) -> Association:
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
    ae.add_requested_context(CTImageStorage)
    tls_args = None if tls is None else (tls, "127.0.0.1")
    return ae.associate("127.0.0.1", port, ae_title="TRIAGE", tls_args=tls_args)


def store_one(port: int, tls: ssl.SSLContext, ds: Dataset) -> int:
    assoc = associate(port, tls)
    assert assoc.is_established, "the receiver refused the TLS association"
    try:
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


def assert_refused(rx: Receiver, tls: ssl.SSLContext | None) -> None:
    """Not established, and nothing was stored. (With TLS 1.3 the client learns that its
    certificate was refused only after its side of the handshake, so it sees an abort or a
    closed connection, never an association.)"""
    assoc = associate(rx.port, tls)
    if assoc.is_established:  # pragma: no cover - only when the test fails
        assoc.release()
        raise AssertionError("the association was established")
    assert list(rx.store.keys("raw/")) == []


# -- the receiver -----------------------------------------------------------------------------


def test_plain_tcp_association_is_refused_when_tls_is_required(
    start_receiver: StartReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    rx = start_receiver(mutual=False)
    caplog.set_level(logging.WARNING, logger="triage.receive.tls")
    assert_refused(rx, None)
    assert "TLS handshake with 127.0.0.1 failed" in caplog.text


def test_tls_association_is_accepted_and_stored(
    start_receiver: StartReceiver, pki: Pki, instance: Dataset
) -> None:
    rx = start_receiver(mutual=False)
    assert store_one(rx.port, client_context(pki, None), instance) == 0x0000
    assert rx.catalogue.has_instance(str(instance.SOPInstanceUID))


def test_mutual_tls_with_a_trusted_client_certificate_is_accepted_and_stored(
    start_receiver: StartReceiver, pki: Pki, instance: Dataset
) -> None:
    rx = start_receiver(mutual=True)
    assert store_one(rx.port, client_context(pki, pki.modality), instance) == 0x0000
    assert rx.catalogue.has_instance(str(instance.SOPInstanceUID))


def test_mutual_tls_without_a_client_certificate_is_refused(
    start_receiver: StartReceiver, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    rx = start_receiver(mutual=True)
    caplog.set_level(logging.WARNING, logger="triage.receive.tls")
    assert_refused(rx, client_context(pki, None))
    assert "TLS handshake with 127.0.0.1 failed" in caplog.text


def test_mutual_tls_with_an_untrusted_client_certificate_is_refused(
    start_receiver: StartReceiver, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    rx = start_receiver(mutual=True)
    caplog.set_level(logging.WARNING, logger="triage.receive.tls")
    assert_refused(rx, client_context(pki, pki.stranger))
    assert "certificate" in caplog.text


def test_tls_and_the_allow_list_work_together(
    start_receiver: StartReceiver, pki: Pki, instance: Dataset, caplog: pytest.LogCaptureFixture
) -> None:
    """A trusted certificate does not admit an AE title that is not allowed.

    The receiver answers A-ASSOCIATE-RJ (reason 3) as over plain TCP. Now and then a pynetdicom
    3.0.4 requestor reports that as an abort: it checks its socket after the TLS handshake,
    by when its own reader may have received the A-ASSOCIATE-RJ and closed the connection.
    """
    rx = start_receiver(mutual=True, TRIAGE_ALLOWED_AES="CT_SCANNER")
    caplog.set_level(logging.WARNING, logger="triage.receive.access")
    assert_refused(rx, client_context(pki, pki.modality))  # calls as MODALITY
    assert "rejected association from AE 'MODALITY' at 127.0.0.1" in caplog.text
    assert rx.stats.refused_associations == 1


def test_a_silent_connection_does_not_hold_up_other_associations(
    start_receiver: StartReceiver, pki: Pki, instance: Dataset
) -> None:
    """The handshake runs in the association's thread: a client that connects and sends
    nothing (a port scan, a stuck peer) must not stop the receiver accepting others."""
    rx = start_receiver(mutual=True)
    with socket.create_connection(("127.0.0.1", rx.port), timeout=5):
        assert store_one(rx.port, client_context(pki, pki.modality), instance) == 0x0000


def test_storescu_over_tls(
    start_receiver: StartReceiver, pki: Pki, instance: Dataset, tmp_path: Path
) -> None:
    rx = start_receiver(mutual=True)
    files = [str(f) for f in write_series([instance], tmp_path / "files")]
    address = ["-aet", "MODALITY", "-aec", "TRIAGE", "127.0.0.1", str(rx.port)]
    tls = ["+tls", str(pki.modality.key), str(pki.modality.cert), "+cf", str(pki.ca)]
    run: dict[str, Any] = dict(capture_output=True, text=True, timeout=60, check=False)
    run["env"] = {**os.environ, "TCP_NODELAY": "1"}
    plain = subprocess.run([require("storescu"), *address, *files], **run)
    assert plain.returncode != 0
    assert list(rx.store.keys("raw/")) == []
    secure = subprocess.run([require("storescu"), *tls, *address, *files], **run)
    assert secure.returncode == 0, secure.stdout + secure.stderr
    assert rx.catalogue.has_instance(str(instance.SOPInstanceUID))


# -- the sender -------------------------------------------------------------------------------


def test_sender_verifies_the_peer_and_presents_the_node_certificate(
    start_receiver: StartReceiver, pki: Pki, instance: Dataset, tmp_path: Path
) -> None:
    pacs = start_receiver(mutual=True)  # stands in for a PACS that requires client certificates
    node = settings_for(tmp_path / "sender", TRIAGE_PACS_TLS="true", **tls_env(pki, True))
    destination = DicomNode("TRIAGE", "127.0.0.1", pacs.port)
    statuses = store_datasets(destination, [instance], "MODALITY", tls=sender_context(node))
    assert statuses == [0x0000]
    assert pacs.catalogue.has_instance(str(instance.SOPInstanceUID))


def test_sender_refuses_a_peer_its_ca_does_not_trust(
    start_receiver: StartReceiver, pki: Pki, instance: Dataset, tmp_path: Path
) -> None:
    pacs = start_receiver(mutual=False)
    other_ca = pki.stranger.cert.parent / "other-ca.pem"
    node = settings_for(tmp_path / "sender", TRIAGE_PACS_TLS="true", TRIAGE_TLS_CA=str(other_ca))
    destination = DicomNode("TRIAGE", "127.0.0.1", pacs.port)
    with pytest.raises(DeliveryError, match="TLS"):
        store_datasets(destination, [instance], "MODALITY", tls=sender_context(node))
    assert list(pacs.store.keys("raw/")) == []


def test_sender_checks_the_host_name(
    start_receiver: StartReceiver, pki: Pki, instance: Dataset, tmp_path: Path
) -> None:
    """The certificate is for 127.0.0.1 and localhost; the PACS is named by another name."""
    pacs = start_receiver(mutual=False)
    node = settings_for(tmp_path / "sender", TRIAGE_PACS_TLS="true", TRIAGE_TLS_CA=str(pki.ca))
    context = sender_context(node)
    assert context is not None
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.network_timeout = 15
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", pacs.port, tls_args=(context, "pacs.example"))
    assert not assoc.is_established


@pytest.mark.integration
@pytest.mark.slow
def test_delivery_to_orthanc_over_mutual_tls(pki: Pki, tmp_path: Path, instance: Dataset) -> None:
    """TRIAGE_PACS_TLS end to end: an outbox item reaches a real PACS that accepts TLS only and
    requires the node's client certificate."""
    from support.orthanc import ORTHANC, Orthanc

    if ORTHANC is None:
        pytest.skip("Orthanc is not installed (Debian package orthanc)")
    pacs = Orthanc(tmp_path / "orthanc", ae_title="TLS_PACS")
    pacs.start(
        extra={
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(pki.node.cert),
            "DicomTlsPrivateKey": str(pki.node.key),
            "DicomTlsTrustedCertificates": str(pki.ca),
            "DicomTlsRemoteCertificateRequired": True,
        }
    )
    try:
        env = {"TRIAGE_PACS": pacs.node, "TRIAGE_PACS_TLS": "true", **tls_env(pki, True)}
        settings = settings_for(tmp_path / "node", **env)
        store = LocalStore(settings.store_path)
        catalogue = Catalogue(settings.database_url)
        try:
            [path] = write_series([instance], tmp_path / "sr")
            data = path.read_bytes()
            syntax = str(instance.file_meta.TransferSyntaxUID)
            catalogue.record_instance(describe_instance(instance, syntax, len(data)))
            key = f"results/{instance.StudyInstanceUID}/{instance.SOPInstanceUID}.dcm"
            store.put(key, data)  # a CT image stands in for an SR: the PACS stores either
            catalogue.enqueue_delivery(
                str(instance.StudyInstanceUID), str(instance.SOPInstanceUID), key, pacs.node
            )
            plain = dataclasses.replace(settings, pacs_tls=False)
            assert deliver_due(store, catalogue, plain).retrying == 1  # Orthanc wants TLS
            [row] = catalogue.deliveries()
            summary = deliver_due(store, catalogue, settings, only=[row])
            assert (summary.delivered, summary.retrying, summary.dead) == (1, 0, 0)
        finally:
            catalogue.close()
        [found] = pacs.instances_of_study(str(instance.StudyInstanceUID))
        delivered = pydicom.dcmread(io.BytesIO(pacs.instance_file(found["ID"])))
        assert delivered.SOPInstanceUID == instance.SOPInstanceUID
    finally:
        pacs.stop()


# -- contexts and their errors ----------------------------------------------------------------


def test_contexts_need_tls_1_2_at_least(pki: Pki, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, TRIAGE_PACS_TLS="true", **tls_env(pki, True))
    for context in (receiver_context(settings), sender_context(settings)):
        assert context is not None
        assert context.minimum_version == MINIMUM_VERSION == ssl.TLSVersion.TLSv1_2


def test_receiver_with_a_ca_requires_client_certificates(pki: Pki, tmp_path: Path) -> None:
    one_way = receiver_context(settings_for(tmp_path / "a", **tls_env(pki, False)))
    mutual = receiver_context(settings_for(tmp_path / "b", **tls_env(pki, True)))
    assert one_way is not None and one_way.verify_mode == ssl.CERT_NONE
    assert mutual is not None and mutual.verify_mode == ssl.CERT_REQUIRED


def test_no_tls_settings_means_no_contexts(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    assert receiver_context(settings) is None
    assert sender_context(settings) is None


def test_a_key_that_does_not_match_the_certificate_is_a_config_error(
    pki: Pki, tmp_path: Path
) -> None:
    settings = settings_for(
        tmp_path, TRIAGE_TLS_CERT=str(pki.node.cert), TRIAGE_TLS_KEY=str(pki.modality.key)
    )
    with pytest.raises(ConfigError, match="TRIAGE_TLS_CERT.*TRIAGE_TLS_KEY.*cannot be used"):
        receiver_context(settings)


def test_an_encrypted_key_is_a_config_error_not_a_prompt(pki: Pki, tmp_path: Path) -> None:
    encrypted = tmp_path / "encrypted.key"
    assert OPENSSL is not None
    subprocess.run(
        [OPENSSL, "pkey", "-in", str(pki.node.key), "-aes256", "-passout", "pass:secret"]
        + ["-out", str(encrypted)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    settings = settings_for(
        tmp_path, TRIAGE_TLS_CERT=str(pki.node.cert), TRIAGE_TLS_KEY=str(encrypted)
    )
    with pytest.raises(ConfigError, match="unencrypted private key"):
        receiver_context(settings)


def test_a_ca_file_without_certificates_is_a_config_error(pki: Pki, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, TRIAGE_PACS_TLS="true", TRIAGE_TLS_CA=str(pki.node.key))
    with pytest.raises(ConfigError, match="TRIAGE_TLS_CA"):
        sender_context(settings)
