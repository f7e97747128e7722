"""Reading the objects of outbox rows back from the store, for any destination."""

from __future__ import annotations

import io

import pydicom

from triage.catalogue import DeliveryRow
from triage.errors import StorageError
from triage.store import ObjectStore


def load_objects(
    store: ObjectStore, rows: list[DeliveryRow]
) -> tuple[list[tuple[DeliveryRow, pydicom.Dataset]], list[tuple[DeliveryRow, str | None]]]:
    """The objects that can be read from the store, and an error for each that cannot."""
    loaded: list[tuple[DeliveryRow, pydicom.Dataset]] = []
    outcome: list[tuple[DeliveryRow, str | None]] = []
    for row in rows:
        try:
            ds = pydicom.dcmread(io.BytesIO(store.get(row.key)))
            if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:  # e.g. cut after its meta
                raise pydicom.errors.InvalidDicomError("it has no SOPClassUID or SOPInstanceUID")
            loaded.append((row, ds))
        except (StorageError, pydicom.errors.InvalidDicomError) as exc:
            outcome.append((row, f"cannot read the {row.kind.upper()} from the store: {exc}"))
    return loaded, outcome
