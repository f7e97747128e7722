"""Instance counts announced by the senders: a study whose counts are all met is complete
without waiting for its quiet period.

The receiver reads the counts from each instance's header (`triage.receive.announced`); here
they are kept (`note_counts`, as each instance is catalogued) and the rule is decided
(`complete_as_announced`, when a worker claims its next study). The rule can only make a study
complete earlier than its quiet period, when the evidence is unambiguous:

- no announced count of the study is wrong (``Study.announced_counts_wrong``): none was
  malformed or below one, no two attributes of one instance disagreed, the images of a series
  announced the same count (or all none), the instances that announced a study count
  announced the same one;
- every series with an image the models analyse announced its count (or, when the study's
  count is announced, a series may leave it out), and has exactly that many instances;
- the study's count, when announced, is exactly the number of its instances of every kind;
- at least one count was announced.

More instances than announced, fewer, or counts that disagree: the quiet period decides, as it
does for a study that announced nothing. An image that comes after an early triage re-opens
the study as any late image does (`Receiving.record_instance`); the count is then exceeded,
so the second triage waits for the quiet period.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import ColumnElement, and_, exists, false, func, or_, select

from triage.catalogue.rows import InstanceRecord
from triage.catalogue.tables import RECEIVING, Instance, Series, Study

#: in an InstanceRecord: a count was announced but cannot be right (malformed, below one,
#: or two attributes of the instance disagreed)
WRONG_COUNT = 0
#: in ``Series.announced_instances``: its images the models analyse announced no count
UNCOUNTED = 0


class SeriesCounts(Protocol):
    """What `note_counts` keeps of a series (its row, or the receiver's copy of its columns)."""

    announced_instances: int | None


class StudyCounts(SeriesCounts, Protocol):
    """What `note_counts` keeps of a study."""

    announced_counts_wrong: bool


def note_counts(study: StudyCounts, series: SeriesCounts, rec: InstanceRecord) -> None:
    """Keep what one new instance announced; a count that disagrees with what its study or
    series announced before, or cannot be right, marks the study's counts wrong."""
    said = rec.announced_study_instances
    if said is not None:
        if said == WRONG_COUNT or study.announced_instances not in (None, said):
            study.announced_counts_wrong = True
        elif study.announced_instances is None:
            study.announced_instances = said
    if not rec.triage_input:
        return  # a dose report or a secondary capture needs no count of its own
    said = rec.announced_series_instances
    if said == WRONG_COUNT:
        study.announced_counts_wrong = True
    said = said or UNCOUNTED  # without a count its series cannot be known complete
    if series.announced_instances is None:
        series.announced_instances = said
    elif series.announced_instances != said:
        study.announced_counts_wrong = True


def complete_as_announced() -> ColumnElement[bool]:
    """A receiving study whose announced counts are all met (the rule above): the condition
    on ``Study`` that a claim adds to the quiet one. It counts the instances of the receiving
    studies that announced counts only, through the indexes on series and instances."""
    in_series = (
        select(func.count(Instance.id)).where(Instance.series_id == Series.id).scalar_subquery()
    )
    in_study = (
        select(func.count(Instance.id))
        .join(Series, Instance.series_id == Series.id)
        .where(Series.study_id == Study.id)
        .scalar_subquery()
    )
    of_study = Series.study_id == Study.id
    counted = exists().where(of_study, Series.announced_instances > UNCOUNTED)
    uncounted = exists().where(of_study, Series.announced_instances == UNCOUNTED)
    unmet = exists().where(
        of_study, Series.announced_instances > UNCOUNTED, Series.announced_instances != in_series
    )
    return and_(
        Study.state == RECEIVING,
        Study.announced_counts_wrong == false(),
        or_(
            and_(Study.announced_instances.is_(None), counted, ~uncounted),
            Study.announced_instances == in_study,
        ),
        ~unmet,
    )
