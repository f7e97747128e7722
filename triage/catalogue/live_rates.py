"""Live rates: how often a model version's results on live studies crossed its thresholds.

`triage models show` puts these next to the rates of the version's evaluation, so that an ML
engineer sees a model flagging far more studies on the ward than it did on the labelled set
(`triage.modelops.drift`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, case, func, not_, select

from triage.catalogue.database import Database
from triage.catalogue.tables import Result


@dataclass(frozen=True)
class LiveRates:
    """A version's rates over its ``results`` results in the catalogue (active and shadow
    alike: the version and its threshold are the same either way); a rate is None when no
    result could give it.

    Each rate is a field here and a condition of the same name in `LIVE_RATE_CONDITIONS`,
    measured over the results where the condition is known (not NULL): results without an OOD
    score (their model has no reference) count neither way in ``ood_rate``.
    """

    results: int
    #: the share of results at or above the threshold: the positive findings
    positive_rate: float | None = None
    #: the share of checked results whose input was unlike the model's reference (uncertain)
    ood_rate: float | None = None


#: What each rate of `LiveRates` counts: a result is flagged when its condition holds
LIVE_RATE_CONDITIONS: dict[str, ColumnElement[bool]] = {
    "positive_rate": Result.probability >= Result.threshold,
    "ood_rate": Result.ood_score > Result.ood_threshold,
}


def _share(condition: ColumnElement[bool]) -> Any:
    """The share of rows where the condition holds, over the rows where it is known: 1 or 0
    per row, NULL (left out of the average) where the condition is NULL."""
    return func.avg(case((condition, 1.0), (not_(condition), 0.0)))


class LiveRateQueries(Database):
    """The part of the catalogue that measures a model version on its live results."""

    def live_rates(self, model_name: str, model_version: str) -> LiveRates:
        """The version's rates over every result it has in the catalogue."""
        names = list(LIVE_RATE_CONDITIONS)
        query = select(
            func.count(Result.id), *(_share(LIVE_RATE_CONDITIONS[n]) for n in names)
        ).where(Result.model_name == model_name, Result.model_version == model_version)
        with self.session() as s:
            count, *rates = s.execute(query).one()
        return LiveRates(
            results=int(count),
            **{n: None if r is None else float(r) for n, r in zip(names, rates, strict=True)},
        )
