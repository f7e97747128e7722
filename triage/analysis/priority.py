"""Scores -> priority, with the fail-safe rules.

A model's probability at or above its threshold gives the model's ``positive_priority``
(urgent); below, routine; and routine too when its input is unlike the model's training data
(*uncertain*). A study's priority is the most urgent of its active models' results.
A study with no result at all is *not analysed*: it stays on the worklist at routine rank,
never hidden and never pushed down.
"""

from __future__ import annotations

from collections.abc import Sequence

from triage.results import ModelResult, Priority


def priority_for(
    probability: float, threshold: float, positive: Priority, *, uncertain: bool = False
) -> Priority:
    """The result's priority. An *uncertain* result (its input unlike the model's training
    data, `triage.analysis.ood`) is shown as such but never urgent: routine, whatever its
    probability, so a model looking at what it never learnt cannot push a study up."""
    if probability != probability:  # NaN: the model did not give a usable answer
        return Priority.NOT_ANALYSED
    if probability < threshold or uncertain:
        return Priority.ROUTINE
    return positive


def study_priority(results: Sequence[ModelResult]) -> Priority:
    """The most urgent result wins; no result means not analysed."""
    analysed = [r.priority for r in results if r.priority is not Priority.NOT_ANALYSED]
    if not analysed:
        return Priority.NOT_ANALYSED
    return min(analysed, key=lambda p: p.rank)
