"""Series selection on every CT and MR series of the real data in ../shared/data/dicom.

Each folder is one study as a node would catalogue it (the receiver's header reading; a file it
would refuse is left out). The shipped head-CT rule and an MR rule say which series they choose
and why not the others.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from triage.analysis.selection import SeriesRule, explain_selection
from triage.config import PROJECT_ROOT
from triage.imaging.inspect import inspect_paths
from triage.modelops.evaluation import study_series

HEAD_CT = SeriesRule.from_dict(
    json.loads((PROJECT_ROOT / "models" / "ich_classifier" / "triage.json").read_text())["series"]
)
MR = SeriesRule.from_dict({"modality": ["MR"], "min_slices": 16})


def verdicts(rule: SeriesRule, folder: Path) -> dict[str, str]:
    selection = explain_selection(rule, study_series(folder))
    return {c.series.series_number: c.reason or "chosen" for c in selection.candidates}


def test_the_headers_the_rules_read(shared_data: Path) -> None:
    (ge,) = study_series(shared_data / "ct_head_ge_tilt_uneven")
    assert (ge.convolution_kernel, ge.slice_thickness, ge.contrast_agent) == ("STD+", 4.0, "")
    assert (ge.body_part, ge.images, ge.series_description) == ("HEAD", 28, "")
    (philips,) = study_series(shared_data / "ct_head_phantom_philips_5mm")
    assert (philips.convolution_kernel, philips.slice_thickness) == ("UB", 5.0)
    assert (philips.body_part, philips.images) == ("BRAIN", 28)
    (enhanced,) = study_series(shared_data / "enhanced_mr_siemens_xa10")
    assert (len(enhanced.keys), enhanced.images) == (4, 24)  # 4 files of 6 frames
    assert enhanced.sop_classes == ("1.2.840.10008.5.1.4.1.1.4.1",)


@pytest.mark.parametrize(
    ("folder", "head_ct", "mr"),
    [
        # GE HiSpeed head CT, kernel STD+, 4 mm (tilted, uneven): the head-CT model's series
        (
            "ct_head_ge_tilt_uneven",
            {"2": "chosen"},
            {"2": "CT Image Storage is not MR image storage"},
        ),
        # Philips Ingenuity "STD BRAIN 5MM", kernel UB
        (
            "ct_head_phantom_philips_5mm",
            {"201": "chosen"},
            {"201": "CT Image Storage is not MR image storage"},
        ),
        # GE MR750 fMRI: 150 images (a 4D series, which assembly then reports)
        (
            "mr_ge_fmri_4d",
            {"4": "MR Image Storage is not CT image storage"},
            {"4": "chosen"},
        ),
        # Siemens XA10 Enhanced MR: 4 files x 6 frames count as 24 images
        (
            "enhanced_mr_siemens_xa10",
            {"6": "Enhanced MR Image Storage is not CT image storage"},
            {"6": "chosen"},
        ),
        # one Siemens MR image in 9 transfer syntaxes: one series of 9 instances
        (
            "transfer_syntaxes_siemens",
            {"1": "MR Image Storage is not CT image storage"},
            {"1": "9 images, fewer than 16"},
        ),
    ],
)
def test_every_ct_and_mr_series_of_the_real_data(
    shared_data: Path, folder: str, head_ct: dict[str, str], mr: dict[str, str]
) -> None:
    assert verdicts(HEAD_CT, shared_data / folder) == head_ct
    assert verdicts(MR, shared_data / folder) == mr


def test_objects_that_are_not_images_are_never_chosen(shared_data: Path) -> None:
    """The pydicom oddities and the SR folder: ultrasound, secondary captures and SRs are never
    candidates; the truncated MR image never reaches the catalogue (the receiver refuses it)."""
    for folder in ("pydicom_oddities", "sr"):
        reports = inspect_paths([shared_data / folder]).series
        catalogued = [r.summary for r in reports if r.summary is not None]
        for rule in (HEAD_CT, MR, SeriesRule.from_dict({"min_slices": 1})):
            selection = explain_selection(rule, catalogued)
            assert selection.chosen is None, folder
            for candidate in selection.candidates:
                assert candidate.reason.endswith("image storage"), candidate.reason
    oddities = inspect_paths([shared_data / "pydicom_oddities"]).series
    (truncated,) = [r for r in oddities if r.summary is None]
    assert truncated.modality == "MR"
    assert "pixel data is truncated" in truncated.refused[0]
