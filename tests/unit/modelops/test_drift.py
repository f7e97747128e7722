"""The drift rule of the positive rate: flagged only far above the evaluation's, and only over
enough live results; its boundaries are not flagged (the rule is "above")."""

from __future__ import annotations

import pytest

from triage.modelops.drift import (
    DRIFT_MARGIN,
    DRIFT_MIN_RESULTS,
    DRIFT_RATIO,
    positive_rate_drifted,
)


def test_the_rule_is_the_one_documented() -> None:
    assert (DRIFT_MIN_RESULTS, DRIFT_RATIO, DRIFT_MARGIN) == (20, 2.0, 0.2)


@pytest.mark.parametrize(
    ("live", "results", "evaluation", "drifted"),
    [
        # evaluation 0.3: the bound is 2 x 0.3 = 0.6 (above 0.3 + 0.2)
        (0.6, 20, 0.3, False),
        (0.65, 20, 0.3, True),
        # evaluation 0.1: the bound is 0.1 + 0.2 = 0.3 (above 2 x 0.1); 0.25 is 2.5 x, not flagged
        (0.25, 20, 0.1, False),
        (0.3, 20, 0.1, False),
        (0.35, 20, 0.1, True),
        # evaluation on normals only, rate 0: flagged above 0.2
        (0.2, 40, 0.0, False),
        (0.225, 40, 0.0, True),
        # one result short of the minimum: too few to say
        (0.9, 19, 0.1, False),
        (0.9, 20, 0.1, True),
        # a rate below the evaluation's is not drift upwards
        (0.0, 100, 0.5, False),
        # nothing to compare: no live results, or an evaluation without a positive rate
        (None, 0, 0.1, False),
        (0.9, 50, None, False),
    ],
)
def test_drift_boundaries(
    live: float | None, results: int, evaluation: float | None, drifted: bool
) -> None:
    assert positive_rate_drifted(live, results, evaluation) is drifted
