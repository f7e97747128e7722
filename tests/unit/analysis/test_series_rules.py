"""Series rules on words, regular expressions, SOP classes, kernels, thickness and contrast."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    XRayRadiationDoseSRStorage,
)
from support.factories import series_summary as series

from triage.analysis.patterns import TextPattern, has_agent
from triage.analysis.selection import SeriesRule, explain_selection, select_series
from triage.errors import ModelError


def rule(**data: Any) -> SeriesRule:
    return SeriesRule.from_dict({"modality": ["CT"], **data})


# -- words and regular expressions --------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "value", "matches"),
    [
        ("dose", "STD BRAIN 1MM, iDose", False),  # the Philips description that was refused
        ("dose", "Dose Report", True),
        ("dose", "DOSE_INFO", True),
        ("dose", "iDose4 level 3", False),
        ("dose report", "Dose  Report", True),
        ("dose report", "dose-report", True),
        ("dose report", "Dose Reporting", False),
        ("scout", "ScOuT view", True),
        ("scout", "Scouts", False),
        ("STD", "STD+", True),  # GE HiSpeed kernel
        ("H30", "H30s", False),  # a Siemens kernel is a whole word
        ("UB", "UB", True),
        ("B", "UB", False),
        ("re:^H[a-z]?[0-4][0-9]", "Hr38\\3", True),
        ("re:^H[a-z]?[0-4][0-9]", "H60s", False),
        ("re:angio", "CT ANGIOGRAPHY HEAD", True),
    ],
)
def test_entries_match_whole_words_or_regular_expressions(
    entry: str, value: str, matches: bool
) -> None:
    assert TextPattern.parse(entry, "exclude_description").matches(value) is matches


def test_dose_in_idose_no_longer_refuses_the_philips_series() -> None:
    refuses_dose = rule(exclude_description=["dose"], min_slices=1)
    assert refuses_dose.why_not(series(description="STD BRAIN 1MM, iDose")) is None
    assert refuses_dose.why_not(series(description="Dose Report")) == "description mentions dose"


def test_description_regex_and_required_words() -> None:
    r = rule(exclude_description=["re:^loc"], description=["brain", "head"], min_slices=1)
    assert r.why_not(series(description="Localiser")) == "description matches re:^loc"
    assert r.why_not(series(description="STD BRAIN 5MM")) is None
    assert r.why_not(series(description="Abdomen")) == (
        "description 'Abdomen' does not mention brain or head"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"modalty": ["CT"]}, "unknown key"),
        ({"prefer_kernels": ["UB"]}, "unknown key"),
        ({"exclude_description": "dose"}, "'exclude_description' must be a list of strings"),
        ({"prefer_kernel": ["UB", 3]}, "'prefer_kernel' must be a list of strings"),
        ({"exclude_kernel": ["re:("]}, "'exclude_kernel'.*not a valid regular expression"),
        ({"exclude_kernel": ["re:"]}, "'exclude_kernel'.*has no regular expression"),
        ({"description": ["  "]}, "'description': an entry is empty"),
        ({"slice_thickness_mm": [5]}, "'slice_thickness_mm' must be \\[min, max\\]"),
        ({"slice_thickness_mm": [6, 1]}, "'slice_thickness_mm'"),
        ({"slice_thickness_mm": "1-5"}, "'slice_thickness_mm'"),
        ({"slice_thickness_mm": [True, 5]}, "'slice_thickness_mm'"),
        ({"prefer_slice_thickness_mm": 0}, "'prefer_slice_thickness_mm'"),
        ({"prefer_slice_thickness_mm": "5"}, "'prefer_slice_thickness_mm'"),
        ({"contrast": "no"}, "'contrast' must be one of any, without, with"),
        ({"modality": ["US"]}, "'modality': no image SOP classes are known for US"),
        ({"sop_class": ["CT Image"]}, "'sop_class': 'CT Image' is neither"),
        ({"min_slices": True}, "'min_slices' must be a positive whole number"),
    ],
)
def test_bad_rules_are_refused_naming_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        SeriesRule.from_dict(data)


def test_a_modality_without_known_image_classes_needs_sop_class() -> None:
    r = SeriesRule.from_dict({"modality": ["US"], "sop_class": ["1.2.840.10008.5.1.4.1.1.6.1"]})
    us = series(modality="US", sop_classes=("1.2.840.10008.5.1.4.1.1.6.1",), images=20)
    assert r.why_not(us) is None
    assert SeriesRule.from_dict({"sop_class": ["CTImageStorage"]}).sop_class == (CTImageStorage,)


# -- SOP classes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sop_class", [CTImageStorage, EnhancedCTImageStorage])
def test_ct_image_storage_classes_are_candidates(sop_class: str) -> None:
    assert rule().why_not(series(sop_classes=(sop_class,))) is None


@pytest.mark.parametrize(
    ("sop_class", "name"),
    [
        (SecondaryCaptureImageStorage, "Secondary Capture Image Storage"),
        (XRayRadiationDoseSRStorage, "X-Ray Radiation Dose SR Storage"),
        (MRImageStorage, "MR Image Storage"),
    ],
)
def test_other_objects_are_never_candidates_even_with_modality_ct(
    sop_class: str, name: str
) -> None:
    # a dose screen with 30 images, Modality CT and nothing else against it
    reason = rule(min_slices=1).why_not(series(sop_classes=(sop_class,)))
    assert reason == f"{name} is not CT image storage"


def test_a_series_mixing_images_and_other_objects_is_refused() -> None:
    mixed = series(sop_classes=(CTImageStorage, SecondaryCaptureImageStorage))
    assert rule().why_not(mixed) == (
        "holds other objects (Secondary Capture Image Storage) besides its images"
    )


def test_unknown_sop_classes_are_not_checked() -> None:
    assert rule().why_not(series(sop_classes=())) is None


def test_min_slices_counts_frames_of_multi_frame_images() -> None:
    enhanced = series(images=1, frames=120, sop_classes=(EnhancedCTImageStorage,))
    assert rule().why_not(enhanced) is None
    assert rule().why_not(series(images=1, frames=8)) == "8 images, fewer than 16"


# -- kernel, thickness, contrast --------------------------------------------------------------


def test_excluded_kernel_names_the_entry() -> None:
    r = rule(exclude_kernel=["BONE", "re:^Y[A-F]$"])
    assert r.why_not(series(kernel="BONE")) == "kernel BONE is excluded (BONE)"
    assert r.why_not(series(kernel="YA")) == "kernel YA is excluded (re:^Y[A-F]$)"
    assert r.why_not(series(kernel="BONEPLUS")) is None  # another word
    assert r.why_not(series(kernel="")) is None  # no kernel: not excluded


def test_slice_thickness_range_is_inclusive_and_unknown_passes() -> None:
    r = rule(slice_thickness_mm=[0.5, 6.5])
    assert r.why_not(series(thickness=0.5)) is None
    assert r.why_not(series(thickness=6.5)) is None
    assert r.why_not(series(thickness=10.0)) == "slice thickness 10 mm is outside 0.5-6.5 mm"
    assert r.why_not(series(thickness=None)) is None


@pytest.mark.parametrize("agent", ["", "NONE", "none", "No", "N/A", " - "])
def test_no_agent_named_is_without_contrast(agent: str) -> None:
    assert not has_agent(agent)
    assert rule(contrast="without").why_not(series(agent=agent)) is None
    assert rule(contrast="with").why_not(series(agent=agent)) == (
        "no contrast agent named; the model wants contrast"
    )


def test_contrast_agent_given_is_refused_by_a_non_contrast_model() -> None:
    assert rule(contrast="without").why_not(series(agent="OMNIPAQUE 350")) == (
        "contrast agent given (OMNIPAQUE 350); the model wants none"
    )
    assert rule(contrast="with").why_not(series(agent="IOMERON")) is None
    assert rule().why_not(series(agent="IOMERON")) is None  # "any" is the default


# -- ranking ------------------------------------------------------------------------------------


def test_preferred_kernel_beats_more_images() -> None:
    r = rule(prefer_kernel=["UB", "re:^H[a-z]?[0-4][0-9]"])
    soft = series("2020", 141, kernel="UB", thickness=1.0)
    other = series("2030", 300, kernel="L", thickness=1.0)
    chosen = explain_selection(r, [other, soft])
    assert chosen.chosen == soft
    (_, loser) = chosen.candidates
    assert loser.series == other and loser.qualifies and not loser.chosen
    assert loser.reason == "kernel L is less preferred than UB of series 2020 (prefer_kernel)"


def test_earlier_prefer_kernel_entry_wins() -> None:
    r = rule(prefer_kernel=["SOFT", "STANDARD"])
    assert select_series(r, [series("2", kernel="STANDARD"), series("3", kernel="SOFT")])[0] == (
        series("3", kernel="SOFT")
    )


def test_original_images_beat_a_derived_reformat() -> None:
    axial = series("2", 30)
    reformat = series("5", 90, image_types=("DERIVED\\SECONDARY\\REFORMATTED",))
    selection = explain_selection(rule(), [reformat, axial])
    assert selection.chosen == axial
    assert selection.candidates[1].reason == (
        "derived images (ImageType DERIVED); series 2 is original"
    )


def test_thickness_closest_to_the_preferred_one_wins_then_more_images() -> None:
    r = rule(prefer_slice_thickness_mm=5)
    thin = series("3", 150, thickness=1.0)
    thick = series("2", 30, thickness=5.0)
    unknown = series("4", 200, thickness=None)
    selection = explain_selection(r, [thin, unknown, thick])
    assert [c.series for c in selection.candidates] == [thick, thin, unknown]
    assert selection.candidates[1].reason == (
        "slice thickness 1 mm is further from 5 mm than 5 mm of series 2"
    )
    assert "unknown is further" in selection.candidates[2].reason
    # without a preferred thickness, the thin series has more images
    assert select_series(rule(), [thin, thick])[0] == thin


def test_more_images_then_the_higher_series_number_numerically() -> None:
    selection = explain_selection(rule(), [series("9", 30), series("10", 30), series("3", 40)])
    assert [c.series.series_number for c in selection.candidates] == ["3", "10", "9"]
    assert selection.candidates[1].reason == "30 images; series 3 has 40"
    tie = explain_selection(rule(), [series("9", 30), series("10", 30)])
    assert (
        tie.candidates[1].reason == "ranks equal to series 10, which has the higher series number"
    )


def test_refused_series_come_after_the_qualifying_ones_with_their_reasons() -> None:
    scout = series("1", 1, image_types=("ORIGINAL\\PRIMARY\\LOCALIZER",))
    screen = series("999", 1, sop_classes=(SecondaryCaptureImageStorage,))
    chosen = series("2", 30)
    selection = explain_selection(rule(), [scout, chosen, screen])
    assert [(c.series.series_number, c.chosen, c.qualifies) for c in selection.candidates] == [
        ("2", True, True),
        ("1", False, False),
        ("999", False, False),
    ]
    assert selection.candidates[1].reason == "image type LOCALIZER"
    assert (
        selection.candidates[2].reason == "Secondary Capture Image Storage is not CT image storage"
    )
