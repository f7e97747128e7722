"""Series selection rules and the score -> priority rules, including the fail-safe ones."""

from __future__ import annotations

import math

import pytest
from pydicom.sr.codedict import codes

from triage.analysis.priority import priority_for, study_priority
from triage.analysis.selection import SeriesRule, select_series
from triage.catalogue import SeriesSummary
from triage.errors import ModelError
from triage.results import ModelResult, Priority

HEAD_CT = {
    "modality": ["CT"],
    "body_part": ["HEAD", "BRAIN"],
    "min_slices": 16,
    "exclude_description": ["scout", "Topogram"],
}


def series(
    number: str = "2",
    images: int = 30,
    *,
    modality: str = "CT",
    body_part: str = "HEAD",
    description: str = "Head 5mm",
    image_types: tuple[str, ...] = ("ORIGINAL\\PRIMARY\\AXIAL",),
) -> SeriesSummary:
    return SeriesSummary(
        series_instance_uid=f"1.2.3.{number}",
        modality=modality,
        body_part=body_part,
        series_description=description,
        series_number=number,
        image_types=image_types,
        keys=tuple(f"raw/s/{number}/{n}.dcm" for n in range(images)),
    )


@pytest.fixture
def rule() -> SeriesRule:
    return SeriesRule.from_dict(HEAD_CT)


# -- rules ------------------------------------------------------------------------------------


def test_rule_from_dict_normalises_and_always_excludes_localizers() -> None:
    rule = SeriesRule.from_dict({"modality": ["ct"], "exclude_image_type": ["derived"]})
    assert rule.modality == ("CT",)
    assert rule.body_part == ()
    assert rule.min_slices == 16
    localizers = ("LOCALIZER", "SCANOGRAM", "SCOUT", "SURVIEW", "TOPOGRAM")
    assert rule.exclude_image_type == ("DERIVED", *localizers)
    assert SeriesRule.from_dict({}).exclude_image_type == localizers


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"modalty": ["CT"]}, "unknown key"),
        ({"modality": "CT"}, "list of strings"),
        ({"body_part": ["HEAD", 3]}, "list of strings"),
        ({"min_slices": 0}, "positive whole number"),
        ({"min_slices": "16"}, "positive whole number"),
        ({"min_slices": 2.5}, "positive whole number"),
    ],
)
def test_bad_rules_are_refused(data: dict, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        SeriesRule.from_dict(data)


def test_matching_series_qualifies(rule: SeriesRule) -> None:
    assert rule.why_not(series()) is None
    assert rule.why_not(series(modality="ct", body_part="brain")) is None


def test_other_modality_is_refused(rule: SeriesRule) -> None:
    assert rule.why_not(series(modality="MR")) == "modality MR is not CT"
    assert rule.why_not(series(modality="")) == "modality unknown is not CT"


def test_blank_body_part_is_accepted(rule: SeriesRule) -> None:
    assert rule.why_not(series(body_part="")) is None


def test_other_body_part_is_refused(rule: SeriesRule) -> None:
    assert rule.why_not(series(body_part="chest")) == "body part CHEST is not HEAD/BRAIN"


def test_rule_without_body_part_accepts_any(rule: SeriesRule) -> None:
    assert SeriesRule.from_dict({"modality": ["CT"]}).why_not(series(body_part="CHEST")) is None


@pytest.mark.parametrize(
    "image_type", ["ORIGINAL\\PRIMARY\\LOCALIZER", "DERIVED\\SECONDARY\\ localizer "]
)
def test_localizer_is_always_excluded(image_type: str) -> None:
    no_exclusions = SeriesRule.from_dict({"exclude_image_type": [], "min_slices": 1})
    assert no_exclusions.why_not(series(image_types=(image_type,))) == "image type LOCALIZER"


def test_localizer_among_several_image_types_excludes_the_series(rule: SeriesRule) -> None:
    mixed = series(image_types=("ORIGINAL\\PRIMARY\\AXIAL", "ORIGINAL\\PRIMARY\\LOCALIZER"))
    assert rule.why_not(mixed) == "image type LOCALIZER"


def test_localizer_as_part_of_a_word_is_not_a_localizer(rule: SeriesRule) -> None:
    assert rule.why_not(series(image_types=("ORIGINAL\\PRIMARY\\NONLOCALIZER",))) is None


def test_excluded_image_type_from_the_rule() -> None:
    rule = SeriesRule.from_dict({"exclude_image_type": ["DERIVED"]})
    assert rule.why_not(series(image_types=("DERIVED\\SECONDARY\\MPR",))) == "image type DERIVED"


@pytest.mark.parametrize(
    ("description", "word"),
    [("Head SCOUT", "scout"), ("topogram 0.6", "topogram"), ("ScOuT view", "scout")],
)
def test_description_words_exclude_case_insensitively(
    rule: SeriesRule, description: str, word: str
) -> None:
    assert rule.why_not(series(description=description)) == f"description mentions {word}"


def test_min_slices_boundary(rule: SeriesRule) -> None:
    assert rule.why_not(series(images=16)) is None
    assert rule.why_not(series(images=15)) == "15 images, fewer than 16"


# -- selection --------------------------------------------------------------------------------


def test_best_series_has_the_most_images(rule: SeriesRule) -> None:
    thin = series("3", images=120, description="Head 1mm")
    thick = series("2", images=30)
    scout = series("1", images=200, image_types=("ORIGINAL\\PRIMARY\\LOCALIZER",))
    chest = series("4", images=300, body_part="CHEST")
    best, reason = select_series(rule, [thick, scout, thin, chest])
    assert best == thin
    assert reason == ""


def test_ties_go_to_the_higher_series_number(rule: SeriesRule) -> None:
    a, b = series("2", images=30), series("5", images=30)
    assert select_series(rule, [b, a])[0] == b
    assert select_series(rule, [a, b])[0] == b


def test_no_series_at_all(rule: SeriesRule) -> None:
    assert select_series(rule, []) == (None, "the study has no images")


def test_nothing_qualifies_names_every_series_and_why(rule: SeriesRule) -> None:
    candidates = [
        series("1", images=1, image_types=("ORIGINAL\\PRIMARY\\LOCALIZER",)),
        series("2", images=40, modality="MR"),
        series("3", images=40, body_part="CHEST"),
        series("4", images=5),
        series("", images=40, description="scout"),
    ]
    best, reason = select_series(rule, candidates)
    assert best is None
    assert reason.startswith("no series matches the model's rules (")
    assert "series 1 (CT): image type LOCALIZER" in reason
    assert "series 2 (MR): modality MR is not CT" in reason
    assert "series 3 (CT): body part CHEST is not HEAD/BRAIN" in reason
    assert "series 4 (CT): 5 images, fewer than 16" in reason
    assert "series ? (CT): description mentions scout" in reason
    assert reason.count("; ") == 4


# -- priority ---------------------------------------------------------------------------------


def test_threshold_boundary_is_inclusive() -> None:
    assert priority_for(0.5, 0.5, Priority.URGENT) is Priority.URGENT
    assert priority_for(math.nextafter(0.5, 0), 0.5, Priority.URGENT) is Priority.ROUTINE
    assert priority_for(0.99, 0.5, Priority.URGENT) is Priority.URGENT
    assert priority_for(0.0, 0.5, Priority.URGENT) is Priority.ROUTINE
    assert priority_for(1.0, 1.0, Priority.URGENT) is Priority.URGENT


def test_positive_priority_is_the_models_choice() -> None:
    assert priority_for(0.9, 0.5, Priority.ROUTINE) is Priority.ROUTINE


def test_nan_probability_is_not_analysed() -> None:
    assert priority_for(float("nan"), 0.5, Priority.URGENT) is Priority.NOT_ANALYSED
    assert priority_for(math.nan, 0.0, Priority.URGENT) is Priority.NOT_ANALYSED


def _result(priority: Priority, name: str = "m") -> ModelResult:
    return ModelResult(name, "1", codes.SCT.IntracranialHemorrhage, 0.5, 0.5, priority, "1.2")


def test_study_priority_urgent_wins() -> None:
    results = [_result(Priority.ROUTINE, "a"), _result(Priority.URGENT, "b")]
    assert study_priority(results) is Priority.URGENT
    assert study_priority(list(reversed(results))) is Priority.URGENT
    assert study_priority([_result(Priority.NOT_ANALYSED), _result(Priority.URGENT)]) is (
        Priority.URGENT
    )


def test_study_priority_routine_when_every_analysed_result_is_routine() -> None:
    assert study_priority([_result(Priority.ROUTINE)]) is Priority.ROUTINE
    assert study_priority([_result(Priority.NOT_ANALYSED), _result(Priority.ROUTINE)]) is (
        Priority.ROUTINE
    )


def test_study_priority_without_results_is_not_analysed() -> None:
    assert study_priority([]) is Priority.NOT_ANALYSED
    assert study_priority([_result(Priority.NOT_ANALYSED)]) is Priority.NOT_ANALYSED


def test_not_analysed_ranks_with_routine_never_below() -> None:
    assert Priority.URGENT.rank < Priority.ROUTINE.rank
    assert Priority.NOT_ANALYSED.rank == Priority.ROUTINE.rank


def test_model_result_positive_uses_the_threshold() -> None:
    assert _result(Priority.URGENT).positive
    below = ModelResult(
        "m", "1", codes.SCT.IntracranialHemorrhage, 0.49, 0.5, Priority.ROUTINE, "1"
    )
    assert not below.positive
