"""Where a positive finding's evidence is kept between the analysis and the report: a
segmentation model's lesion mask goes to the object store, and only its key travels on (tasks
pass keys, never arrays)."""

from __future__ import annotations

import hashlib
import io

import numpy as np

from triage.errors import StorageError
from triage.store import ObjectStore


def keep_lesion(
    store: ObjectStore,
    study_uid: str,
    model_name: str,
    mask: np.ndarray,
    affine_lps: np.ndarray,
) -> str:
    """Store the lesion mask (bool, on the model input grid) and its affine; return the key.

    The key derives from the content, so the same lesion is the same object, written once.
    """
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        mask=np.packbits(np.asarray(mask, dtype=bool), axis=None),
        shape=np.asarray(mask.shape, dtype=np.int64),
        affine=np.asarray(affine_lps, dtype=np.float64),
    )
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()[:24]
    key = f"work/{study_uid}/{model_name}/lesion-{digest}.npz"
    store.put(key, data)
    return key


def lesion_of(store: ObjectStore, key: str) -> tuple[np.ndarray, np.ndarray]:
    """The lesion mask and its affine (voxel index -> LPS mm), as `keep_lesion` stored them."""
    try:
        with np.load(io.BytesIO(store.get(key))) as data:
            shape = tuple(int(v) for v in data["shape"])
            count = int(np.prod(shape))
            mask = np.unpackbits(data["mask"], count=count).astype(bool).reshape(shape)
            return mask, np.asarray(data["affine"], dtype=np.float64)
    except (KeyError, ValueError, OSError) as exc:
        raise StorageError(
            f"the lesion mask {key} in the object store is unreadable: {exc}"
        ) from exc
