"""Registered versions on this machine: unpacked from the object store into a local cache.

The object store keeps each version as a zip (``models/<name>/<hash>.zip``); to run it, a node
unpacks it once into ``<cache>/<name>/<hash>/`` and checks it against its content hash, both
when unpacking and each time it is read, so a damaged store object or an edited cache folder is
named instead of run. Several processes may unpack the same version at once: the first rename
wins and the others use its folder.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from triage.analysis.model import TriageModel
from triage.analysis.ood import Reference
from triage.errors import ModelError
from triage.modelops.archive import unpack_zip
from triage.modelops.bundle import read_bundle
from triage.modelops.versions import ACTIVE, SHADOW, VersionInfo
from triage.store import ObjectStore


def cached_model(store: ObjectStore, cache_dir: Path, info: VersionInfo) -> TriageModel:
    """The version as the pipeline runs it, unpacked from the object store into the local
    cache once (and checked against its content hash)."""
    folder = Path(cache_dir) / info.name / info.content_hash
    if not folder.is_dir():
        unpack_version(store, info, folder)
    bundle = read_bundle(folder, name=info.name)
    if bundle.content_hash != info.content_hash:
        raise ModelError(
            f"the cached copy of {info.name} {info.version} in {folder} does not match its "
            "content hash: delete that folder and it is unpacked again from the store"
        )
    model = bundle.model(role=info.state if info.state in (ACTIVE, SHADOW) else ACTIVE)
    if info.reference is not None:  # what the registry recorded, not what the bundle says now
        model.reference = Reference.from_dict(info.reference)
    return model


def unpack_version(store: ObjectStore, info: VersionInfo, folder: Path) -> None:
    """Unpack the stored zip of a version into ``folder`` (through a temporary folder beside
    it, so that a half-unpacked version is never read)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=folder.parent))
    try:
        root = unpack_zip(store.get(info.key), tmp, info.key)
        bundle = read_bundle(root, name=info.name)
        if bundle.content_hash != info.content_hash:
            raise ModelError(
                f"{info.key} in the object store does not match the content hash of "
                f"{info.name} {info.version}: the stored bundle was changed or damaged"
            )
        try:
            root.rename(folder)
        except OSError:
            if not folder.is_dir():  # not another process unpacking it at the same time
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
