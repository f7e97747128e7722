"""A model version's results on live studies, written straight into a catalogue: what `show`
measures, without receiving and triaging each study."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import count

from sqlalchemy.orm import Session

from triage.catalogue import Catalogue, Result, Study
from triage.results import Priority, Role

_STUDY = count(1)


def add_live_results(
    catalogue: Catalogue,
    model_name: str,
    model_version: str,
    probabilities: Sequence[float],
    *,
    threshold: float = 0.5,
    role: Role = Role.ACTIVE,
) -> None:
    """One triaged study per probability, with the version's result on it."""

    def work(s: Session) -> None:
        for p in probabilities:
            study = Study(study_instance_uid=f"2.25.{next(_STUDY)}", state="triaged")
            s.add(study)
            s.flush()
            s.add(
                Result(
                    study_id=study.id,
                    model_name=model_name,
                    model_version=model_version,
                    series_instance_uid=f"{study.study_instance_uid}.1",
                    finding_value="1386000",
                    finding_scheme="SCT",
                    finding_meaning="Intracranial hemorrhage",
                    probability=p,
                    threshold=threshold,
                    priority=Priority.URGENT if p >= threshold else Priority.ROUTINE,
                    role=role,
                )
            )

    catalogue.transaction(work)
