"""Every KOS and SEG the writers make passes dciodvfy with zero errors: synthetic series,
anonymised copies, and the real GE (tilt, uneven spacing) and Philips head CTs."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid
from support.dicom_checks import assert_dciodvfy_clean
from support.factories import lesion_ct_series
from support.real_series import (
    GE_TILT_UNEVEN,
    PHILIPS_5MM,
    anonymised,
    series_files,
    series_headers,
)

from triage.analysis.preprocess import InputSpec, model_input_with_affine
from triage.analysis.source_slices import key_images, mask_on_source_slices
from triage.imaging.volume import assemble_volume
from triage.report.kos import build_key_object_selection
from triage.report.seg import build_lesion_segmentation

ICH = Code("1386000", "SCT", "Intracranial hemorrhage")
MODEL_INPUT = InputSpec(pixdim=(2.5, 2.5, 5.0), spatial_size=(96, 96, 32), window=(0.0, 100.0))


def common(tag: str, kind: str) -> dict[str, object]:
    return {
        "finding": ICH,
        "model_name": "lesion_segmenter",
        "model_version": "1.0.0+0badcafe",
        "series_instance_uid": generate_uid(entropy_srcs=[tag, kind, "series"]),
        "series_number": 995 if kind == "kos" else 996,
        "sop_instance_uid": generate_uid(entropy_srcs=[tag, kind]),
        "instance_number": 2,
        "content_datetime": datetime(2024, 5, 17, 14, 30, 5),
        "software_version": "0.1.0",
    }


def check_both(
    tmp_path: Path, tag: str, headers: list[Dataset], mask: np.ndarray, affine: np.ndarray
) -> None:
    """Write the SEG of the lesion and the KOS of its centre slices; dciodvfy both."""
    frames = mask_on_source_slices(mask, affine, headers)
    centre_ijk = np.argwhere(mask).mean(axis=0)
    centre = (affine @ np.array([*centre_ijk, 1.0]))[:3]
    seg = build_lesion_segmentation(headers, frames, **common(tag, "seg"))
    kos = build_key_object_selection(key_images(headers, centre, 2), **common(tag, "kos"))
    for name, document in (("seg", seg), ("kos", kos)):
        path = tmp_path / f"{tag}_{name}.dcm"
        document.save_as(path, enforce_file_format=True)
        assert_dciodvfy_clean(path)


@pytest.mark.parametrize("strip", [False, True], ids=["complete", "anonymised"])
def test_synthetic_series(tmp_path: Path, strip: bool) -> None:
    phantom, headers = lesion_ct_series("dciodvfy_kos_seg", seed=6)
    if strip:
        headers = anonymised(headers)
    check_both(tmp_path, f"synthetic_{strip}", headers, phantom.lesion_mask, phantom.affine_lps)


@pytest.mark.parametrize("name", [GE_TILT_UNEVEN, PHILIPS_5MM])
def test_real_ct(tmp_path: Path, name: str) -> None:
    files = series_files(name)
    volume = assemble_volume(lambda key: Path(key).read_bytes(), [str(f) for f in files])
    x, affine = model_input_with_affine(
        volume.array, volume.affine_lps, MODEL_INPUT, torch.device("cpu")
    )
    # a 15 mm lesion in the middle of the model's input, where the head is
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in x.shape[2:]], indexing="ij"), axis=-1)
    voxel = np.linalg.norm(affine[:3, :3], axis=0)
    mask = np.linalg.norm((ijk - (np.asarray(x.shape[2:]) - 1) / 2) * voxel, axis=-1) <= 15.0
    headers = series_headers(name)
    check_both(tmp_path, name, headers, mask, affine)
    check_both(tmp_path, f"{name}_anonymised", anonymised(headers), mask, affine)
