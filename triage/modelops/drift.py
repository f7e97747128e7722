"""Drift of the positive rate: a version flagging far more live studies than it did when it was
evaluated.

A model that finds a bleed in 10 % of the labelled set and in 40 % of the live studies is either
seeing different patients or different images (a new scanner, a new protocol), and its
evaluation no longer describes it: the ML engineer should look before trusting it further. A
rate below the evaluation's is not flagged: fewer positives is what an evaluation set enriched
with findings leads one to expect.
"""

from __future__ import annotations

#: Fewer live results than this say too little to call a rate drifted
DRIFT_MIN_RESULTS = 20
#: The live rate is drifted above this many times the evaluation's rate ...
DRIFT_RATIO = 2.0
#: ... and above the evaluation's rate plus this (so that 1 % -> 3 % is not flagged)
DRIFT_MARGIN = 0.2


def positive_rate_drifted(
    live_rate: float | None, live_results: int, evaluation_rate: float | None
) -> bool:
    """Whether the live positive rate is far above the evaluation's: with at least
    `DRIFT_MIN_RESULTS` live results, live > max(`DRIFT_RATIO` x evaluation,
    evaluation + `DRIFT_MARGIN`). Without both rates there is nothing to compare: not flagged."""
    if live_rate is None or evaluation_rate is None or live_results < DRIFT_MIN_RESULTS:
        return False
    return live_rate > max(DRIFT_RATIO * evaluation_rate, evaluation_rate + DRIFT_MARGIN)


def drift_rule_text() -> str:
    """The rule in words, for the terminal and the docs."""
    return (
        f"live rate above max({DRIFT_RATIO:g} x evaluation, evaluation + {DRIFT_MARGIN:g}) "
        f"over at least {DRIFT_MIN_RESULTS} live results"
    )
