"""The shipped head-CT rule on studies named as GE, Siemens, Philips and Canon scanners name them.

Descriptions, kernels and non-image objects follow docs/series_selection.md (which says where
each name was learned). The series are real CT Image Storage instances made from a phantom and
go through the receiver's header reading, as on a node.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from support.factories import (
    catalogued_series,
    dose_report,
    secondary_capture,
    series_summary,
    vendor_ct_series,
    vendor_localizer,
)

from triage.analysis.head_ct import HEAD_CT_WITHOUT_CONTRAST
from triage.analysis.selection import Selection, SeriesRule, explain_selection
from triage.config import PROJECT_ROOT

GE, SIEMENS, PHILIPS, CANON = "GE MEDICAL SYSTEMS", "SIEMENS", "Philips", "CANON_MEC"
PHILIPS_1MM: dict[str, Any] = {"manufacturer": PHILIPS, "thickness": 1.0, "slices": 40}


@pytest.fixture(scope="module")
def rule() -> SeriesRule:
    """The rule of the shipped bundles, read from their triage.json."""
    rules = [
        json.loads((PROJECT_ROOT / "models" / name / "triage.json").read_text())["series"]
        for name in ("ich_classifier", "lesion_segmenter")
    ]
    assert rules[0] == rules[1] == HEAD_CT_WITHOUT_CONTRAST
    return SeriesRule.from_dict(rules[0])


def study(tag: str) -> str:
    return generate_uid(entropy_srcs=["vendor study", tag])


def verdicts(selection: Selection) -> dict[str, str]:
    """Series number -> "chosen" or the reason it was not."""
    return {c.series.series_number: c.reason or "chosen" for c in selection.candidates}


def choose(rule: SeriesRule, datasets: list[Dataset]) -> dict[str, str]:
    return verdicts(explain_selection(rule, catalogued_series(datasets)))


def test_philips_idose_soft_tissue_series_is_analysed_beside_its_bone_series(
    rule: SeriesRule,
) -> None:
    """The issue's study: "STD BRAIN 1MM, iDose" was refused for "dose", and the bone series won."""
    uid = study("philips idose")
    got = choose(
        rule,
        [
            vendor_localizer(uid, 1000, "", PHILIPS),
            *vendor_ct_series(uid, 2020, "STD BRAIN 1MM, iDose", "UB", **PHILIPS_1MM),
            *vendor_ct_series(uid, 2030, "BONE BRAIN 1MM", "YA", **PHILIPS_1MM),
            *secondary_capture(
                uid,
                4010,
                "Exam Summary",
                manufacturer=PHILIPS,
                image_type=("DERIVED", "SECONDARY", "REF_SURVIEW"),
                images=3,
            ),
        ],
    )
    assert got == {
        "2020": "chosen",
        "1000": "image type LOCALIZER",
        "2030": "kernel YA is excluded (re:^Y[A-F]$)",
        "4010": "Secondary Capture Image Storage is not CT image storage",
    }


def test_philips_ingenuity_head_study_prefers_the_5mm_soft_tissue_series(rule: SeriesRule) -> None:
    uid = study("philips full")
    got = choose(
        rule,
        [
            vendor_localizer(uid, 1000, "", PHILIPS),
            *vendor_ct_series(uid, 2010, "STD BRAIN 5MM", "UB", manufacturer=PHILIPS, slices=28),
            *vendor_ct_series(uid, 2020, "STD BRAIN 1MM, iDose", "UB", **PHILIPS_1MM),
            *vendor_ct_series(uid, 2030, "BONE BRAIN 1MM", "YC", **PHILIPS_1MM),
        ],
    )
    assert got["2010"] == "chosen"
    assert got["2020"] == "slice thickness 1 mm is further from 5 mm than 5 mm of series 2010"
    assert got["2030"] == "kernel YC is excluded (re:^Y[A-F]$)"


def test_ge_head_study(rule: SeriesRule) -> None:
    uid = study("ge")
    got = choose(
        rule,
        [
            vendor_localizer(uid, 1, "Scout", GE),
            *vendor_ct_series(uid, 2, "HEAD 5mm STND", "STANDARD", manufacturer=GE),
            *vendor_ct_series(uid, 3, "HEAD 5mm SOFT", "SOFT", manufacturer=GE),
            *vendor_ct_series(uid, 4, "HEAD 1.25mm", "BONE", manufacturer=GE, thickness=1.25),
            *vendor_ct_series(uid, 5, "HEAD 1.25mm DETAIL", "DETAIL", manufacturer=GE),
            *vendor_ct_series(uid, 6, "CHEST 1.25mm", "LUNG", manufacturer=GE, thickness=1.25),
            *secondary_capture(uid, 999, "Dose Report", manufacturer=GE),
            dose_report(uid, 997, modality="CT"),
        ],
    )
    assert got == {
        "2": "chosen",
        "3": "kernel SOFT is less preferred than STANDARD of series 2 (prefer_kernel)",
        "5": "kernel DETAIL is less preferred than STANDARD of series 2 (prefer_kernel)",
        "1": "image type LOCALIZER",
        "4": "kernel BONE is excluded (BONE)",
        "6": "kernel LUNG is excluded (LUNG)",
        "999": "Secondary Capture Image Storage is not CT image storage",
        "997": "X-Ray Radiation Dose SR Storage is not CT image storage",
    }


def test_siemens_definition_head_study(rule: SeriesRule) -> None:
    uid = study("siemens")
    got = choose(
        rule,
        [
            vendor_localizer(uid, 1, "Topogram  0.6  T20s", SIEMENS),
            *vendor_ct_series(uid, 2, "Head  5.0  H30s", "H30s", manufacturer=SIEMENS),
            *vendor_ct_series(
                uid, 3, "Head  0.75  H30s", "H30s", manufacturer=SIEMENS, thickness=0.75
            ),
            *vendor_ct_series(
                uid, 4, "Head  0.75  H60s", "H60s", manufacturer=SIEMENS, thickness=0.75
            ),
            *secondary_capture(uid, 501, "Patient Protocol", manufacturer=SIEMENS),
        ],
    )
    assert got == {
        "2": "chosen",
        "3": "slice thickness 0.75 mm is further from 5 mm than 5 mm of series 2",
        "1": "image type LOCALIZER",
        "4": "kernel H60s is excluded (re:^[HBJQU][a-z]?[6-9][0-9])",
        "501": "Secondary Capture Image Storage is not CT image storage",
    }


def test_siemens_force_head_study_with_admire_kernels_and_a_contrast_series(
    rule: SeriesRule,
) -> None:
    uid = study("siemens force")
    got = choose(
        rule,
        [
            *vendor_ct_series(uid, 2, "Kopf  5.0  Br40  3", ["Br40", "3"], manufacturer=SIEMENS),
            *vendor_ct_series(uid, 3, "Kopf  5.0  Hr38  3", ["Hr38", "3"], manufacturer=SIEMENS),
            *vendor_ct_series(uid, 4, "Kopf  1.0  Hr64", ["Hr64", "3"], manufacturer=SIEMENS),
            *vendor_ct_series(uid, 5, "Kopf  5.0  Qr40", ["Qr40", "3"], manufacturer=SIEMENS),
            *vendor_ct_series(
                uid,
                6,
                "KM Kopf  5.0  Hr38",
                ["Hr38", "3"],
                manufacturer=SIEMENS,
                contrast_agent="Ultravist 370",
            ),
        ],
    )
    assert got == {
        "3": "chosen",
        "2": "kernel Br40\\3 is less preferred than Hr38\\3 of series 3 (prefer_kernel)",
        "5": "kernel Qr40\\3 is less preferred than Hr38\\3 of series 3 (prefer_kernel)",
        "4": "kernel Hr64\\3 is excluded (re:^[HBJQU][a-z]?[6-9][0-9])",
        "6": "contrast agent given (Ultravist 370); the model wants none",
    }


def test_canon_aquilion_head_study(rule: SeriesRule) -> None:
    uid = study("canon")
    got = choose(
        rule,
        [
            vendor_localizer(uid, 1, "Scanogram", CANON),
            *vendor_ct_series(uid, 2, "HEAD  5.0  FC26", "FC26", manufacturer=CANON),
            *vendor_ct_series(uid, 3, "HEAD  5.0  FC30", "FC30", manufacturer=CANON, slices=40),
            *vendor_ct_series(uid, 4, "CTA HEAD 0.5", "FC43", manufacturer=CANON, thickness=0.5),
            *secondary_capture(uid, 900, "Dose Info", manufacturer=CANON),
        ],
    )
    assert got == {
        "2": "chosen",
        "3": "kernel FC30 is less preferred than FC26 of series 2 (prefer_kernel)",
        "1": "image type LOCALIZER",
        "4": "description mentions cta",
        "900": "Secondary Capture Image Storage is not CT image storage",
    }


def test_a_study_of_bone_kernels_scouts_and_dose_objects_is_not_analysed(rule: SeriesRule) -> None:
    uid = study("bone only")
    selection = explain_selection(
        rule,
        catalogued_series(
            [
                vendor_localizer(uid, 1, "Scout", GE),
                *vendor_ct_series(uid, 3, "HEAD 1.25mm", "BONEPLUS", manufacturer=GE),
                *secondary_capture(uid, 999, "Dose Report", manufacturer=GE),
                dose_report(uid),
            ]
        ),
    )
    assert selection.chosen is None
    assert selection.reason == (
        "no series matches the model's rules (series 1 (CT): image type LOCALIZER; "
        "series 3 (CT): kernel BONEPLUS is excluded (BONEPLUS); "
        "series 999 (CT): Secondary Capture Image Storage is not CT image storage; "
        "series 997 (SR): X-Ray Radiation Dose SR Storage is not CT image storage)"
    )


@pytest.mark.parametrize(
    ("kernel", "verdict"),
    [
        ("STANDARD", "preferred"),  # GE
        ("SOFT", "preferred"),
        ("STD+", "preferred"),
        ("BONE", "excluded"),
        ("BONEPLUS", "excluded"),
        ("LUNG", "excluded"),
        ("EDGE", "excluded"),
        ("DETAIL", "last"),
        ("H30s", "preferred"),  # Siemens
        ("H40f", "preferred"),
        ("H60s", "excluded"),
        ("H70h", "excluded"),
        ("Hr38\\3", "preferred"),
        ("Hr64", "excluded"),
        ("Br40", "preferred"),
        ("Qr40\\2", "preferred"),
        ("Bl57", "excluded"),
        ("UA", "preferred"),  # Philips
        ("UB", "preferred"),
        ("UC", "preferred"),
        ("YA", "excluded"),
        ("YC", "excluded"),
        ("B", "last"),
        ("FC21", "preferred"),  # Canon
        ("FC26", "preferred"),
        ("FC30", "last"),
        ("", "last"),  # none written
    ],
)
def test_shipped_kernel_lists(rule: SeriesRule, kernel: str, verdict: str) -> None:
    candidate = series_summary(kernel=kernel)
    reason = rule.why_not(candidate)
    if verdict == "excluded":
        assert reason is not None and reason.startswith(f"kernel {kernel} is excluded (")
        return
    assert reason is None
    last = rule.kernel_rank(candidate) == len(rule.prefer_kernel)
    assert last is (verdict == "last")
