"""The real CT series of the shared data, read as the pipeline reads them (tests skip without)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from support.paths import SHARED_DATA

#: GE HiSpeed head CT, anonymised: gantry tilt 18.5 degrees, slice steps 1.1-7.4 mm
GE_TILT_UNEVEN = "ct_head_ge_tilt_uneven"
#: Philips Ingenuity head phantom, even 5 mm slices
PHILIPS_5MM = "ct_head_phantom_philips_5mm"
#: Type 2 attributes anonymisers leave out (absent, not empty)
TYPE2_REMOVED = (
    "PatientBirthDate",
    "PatientSex",
    "ReferringPhysicianName",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
)


def series_files(name: str) -> list[Path]:
    """The image files of one shared series (a DICOMDIR beside them left out)."""
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"real DICOM data not found at {folder}")
    files = []
    for path in sorted(folder.iterdir()):
        header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        if "ImagePositionPatient" in header:
            files.append(path)
    return files


def series_headers(name: str) -> list[Dataset]:
    """Headers (no pixel data) of one shared series, in file-name order."""
    return [pydicom.dcmread(path, stop_before_pixels=True) for path in series_files(name)]


def anonymised(headers: Sequence[Dataset], drop: Sequence[str] = TYPE2_REMOVED) -> list[Dataset]:
    """Copies of the headers without the type 2 attributes an anonymiser removes."""
    out = []
    for header in headers:
        copied = copy.deepcopy(header)
        for keyword in drop:
            if keyword in copied:
                delattr(copied, keyword)
        out.append(copied)
    return out
