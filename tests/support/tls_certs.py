"""Throwaway certificates for TLS tests, made with the openssl command at test time.

Nothing here is ever committed: every test session makes its own CA, a certificate for the
node (server and client use, valid for 127.0.0.1 and localhost), a client certificate for a
modality, and a second CA with its own client that the node must not trust.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL = shutil.which("openssl")
DAYS = "2"


@dataclass(frozen=True)
class Identity:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path  # the hospital's CA bundle (TRIAGE_TLS_CA)
    node: Identity  # the triage node (and, in tests, the PACS)
    modality: Identity  # a modality with a certificate from the hospital's CA
    stranger: Identity  # a client whose certificate comes from another CA


def _openssl(*args: str, cwd: Path) -> None:
    assert OPENSSL is not None, "openssl is not installed"
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _new_ca(folder: Path, name: str) -> Identity:
    key, cert = folder / f"{name}.key", folder / f"{name}.pem"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", DAYS, "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    return Identity(cert, key)


def _new_leaf(folder: Path, name: str, ca: Identity) -> Identity:
    key, csr, cert = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.pem"
    extensions = folder / f"{name}.ext"
    extensions.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyAgreement\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-CAcreateserial", "-out", str(cert), "-days", DAYS, "-extfile", str(extensions),
        cwd=folder,
    )  # fmt: skip
    return Identity(cert, key)


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    ca = _new_ca(folder, "hospital-ca")
    other_ca = _new_ca(folder, "other-ca")
    return Pki(
        ca=ca.cert,
        node=_new_leaf(folder, "triage-node", ca),
        modality=_new_leaf(folder, "modality", ca),
        stranger=_new_leaf(folder, "stranger", other_ca),
    )
