"""Small synthetic CT series for tests: one place that knows the ct_series arguments."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from triage.synthetic.phantom import head_phantom
from triage.synthetic.series import ct_series


def phantom_ct_series(
    tag: str,
    seed: int = 0,
    shape: tuple[int, int, int] = (32, 32, 4),
    spacing: tuple[float, float, float] = (7.0, 7.0, 5.0),
    **overrides: Any,
) -> list[Dataset]:
    """A head phantom without lesion as a CT series; UIDs derive from (tag, seed) unless given."""
    phantom = head_phantom(np.random.default_rng(seed), shape, spacing, False)
    return _series(phantom, tag, seed, overrides)


def lesion_ct_series(
    tag: str,
    seed: int = 0,
    shape: tuple[int, int, int] = (48, 48, 12),
    spacing: tuple[float, float, float] = (4.0, 4.0, 5.0),
    lesion_radius_mm: float = 12.0,
    **overrides: Any,
) -> tuple[Any, list[Dataset]]:
    """A head phantom with a lesion (a `triage.synthetic.phantom.Phantom`: it knows where, in
    ``lesion`` and ``lesion_mask``) and its CT series; slice k of the series is
    ``phantom.hu[:, :, k]``, its pixel (row j, column i) is voxel (i, j, k), and
    ``phantom.affine_lps`` places both."""
    phantom = head_phantom(
        np.random.default_rng(seed), shape, spacing, True, lesion_radius_mm=lesion_radius_mm
    )
    return phantom, _series(phantom, tag, seed, overrides)


def _series(phantom: Any, tag: str, seed: int, overrides: dict[str, Any]) -> list[Dataset]:
    attrs: dict[str, Any] = {
        "study_instance_uid": generate_uid(entropy_srcs=[tag, "study", str(seed)]),
        "series_instance_uid": generate_uid(entropy_srcs=[tag, "series", str(seed)]),
        "patient_id": f"PID{seed}",
        "patient_name": "Phantom^Head",
        "accession_number": f"ACC{seed}",
        "study_description": "CT head",
        "series_description": "Head 5mm",
        "series_number": 2,
        "study_date": "20240517",
        "study_time": "120000",
        **overrides,
    }
    return ct_series(phantom.hu, phantom.spacing, **attrs)


def todays_ct_study(tag: str, slices: int = 4, **overrides: Any) -> list[Dataset]:
    """A small CT study dated now (what a PACS query for new studies finds)."""
    now = datetime.now()
    return phantom_ct_series(
        tag,
        shape=(24, 24, slices),
        study_date=now.strftime("%Y%m%d"),
        study_time=now.strftime("%H%M%S"),
        **overrides,
    )
