"""Receiving: what the receiver asks of the catalogue before it answers a C-STORE.

An instance is catalogued once; a new image re-opens a study that was triaged (state
receiving, generation + 1, so that a run that finishes on the older generation does not
overwrite the new one); the write waits for a locked database within a bound the sender's
DIMSE timeout allows (``RECORD_LOCK_WAIT_SECONDS``).
"""

from __future__ import annotations

import time

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from triage.catalogue.announced import note_counts
from triage.catalogue.database import Database
from triage.catalogue.rows import InstanceRecord
from triage.catalogue.tables import RECEIVING, Instance, Series, Study, utcnow
from triage.errors import StorageError


class Receiving(Database):
    """What the receiver records and asks: is an instance here, catalogue it, what is stored."""

    def has_instance(self, sop_instance_uid: str) -> bool:
        with self.session() as s:
            found = s.scalar(
                select(Instance.id).where(Instance.sop_instance_uid == sop_instance_uid)
            )
            return found is not None

    def record_instance(self, rec: InstanceRecord) -> bool:
        """Catalogue a stored instance; False when it was already there (stored once).

        What a new instance does to its study: an image the models analyse
        (``rec.triage_input``) arriving after triage has started or finished re-opens the study
        (state receiving, generation + 1: it is triaged again) and restarts its quiet period.
        Anything else (a secondary capture, dose report, presentation state, KOS, another SR,
        this node's own SR forwarded back) is catalogued beside it and changes neither state,
        generation nor arrival time, unless the study is still receiving: then it restarts the
        quiet period, as the rest of a study forwarded with it is likely to follow. A study
        first seen through such an instance starts receiving like any other. The instance
        counts it announces are kept for the claim (`triage.catalogue.announced`).

        A locked or busy database is waited for, but ``record_lock_wait_seconds`` at most
        (RECORD_LOCK_WAIT_SECONDS, 8 s); then StorageError, which the receiver answers with
        0xA700 so that the sender retries. The bytes it stored stay in the store: the retry
        catalogues them, or the reconciliation after an unclean stop does.
        """
        deadline = time.monotonic() + self.record_lock_wait_seconds

        def work(s: Session) -> bool:
            if s.scalar(
                select(Instance.id).where(Instance.sop_instance_uid == rec.sop_instance_uid)
            ):
                return False
            now = utcnow()
            # locked: the instances of one study are catalogued one after the other, so that
            # each compares its announced counts with what the others announced (PostgreSQL;
            # SQLite writes one at a time anyway)
            study = s.scalar(
                select(Study)
                .where(Study.study_instance_uid == rec.study_instance_uid)
                .with_for_update()
            )
            if study is None:
                study = Study(
                    study_instance_uid=rec.study_instance_uid,
                    accession_number=rec.accession_number,
                    patient_id=rec.patient_id,
                    study_description=rec.study_description,
                    study_date=rec.study_date,
                    first_received_at=now,
                    last_instance_at=now,
                    state=RECEIVING,
                    generation=1,
                    announced_counts_wrong=False,
                )
                s.add(study)
                s.flush()
            elif rec.triage_input:
                study.last_instance_at = now
                if study.state != RECEIVING:
                    study.state = RECEIVING
                    study.generation += 1  # a worker triaging the old one is fenced off
                    study.lease_expires = None
            elif study.state == RECEIVING:
                study.last_instance_at = now
            series = s.scalar(
                select(Series).where(Series.series_instance_uid == rec.series_instance_uid)
            )
            if series is None:
                series = Series(
                    study_id=study.id,
                    series_instance_uid=rec.series_instance_uid,
                    modality=rec.modality,
                    body_part=rec.body_part,
                    series_description=rec.series_description,
                    series_number=rec.series_number,
                    convolution_kernel=rec.convolution_kernel,
                    slice_thickness=rec.slice_thickness,
                    contrast_agent=rec.contrast_agent,
                )
                s.add(series)
                s.flush()
            note_counts(study, series, rec)
            s.add(
                Instance(
                    series_id=series.id,
                    sop_instance_uid=rec.sop_instance_uid,
                    sop_class_uid=rec.sop_class_uid,
                    transfer_syntax_uid=rec.transfer_syntax_uid,
                    image_type=rec.image_type,
                    frames=rec.frames,
                    key=rec.key,
                    size=rec.size,
                    received_at=now,
                )
            )
            return True

        for _ in range(5):
            try:
                return self.transaction(work, deadline=deadline)
            except IntegrityError:
                # another writer created the same study, series or instance at the same moment:
                # run again; it now finds their rows (and False if the instance itself was theirs)
                continue
        raise StorageError(f"catalogue write of {rec.sop_instance_uid} kept conflicting; retry")

    def catalogued_keys(self, prefix: str = "") -> set[str]:
        with self.session() as s:
            return set(s.scalars(select(Instance.key).where(Instance.key.startswith(prefix))))

    def instance_count(self, study_uid: str) -> int:
        """How many instances of the study are stored and catalogued here."""
        with self.session() as s:
            count = s.scalar(
                select(func.count(Instance.id))
                .join(Series, Instance.series_id == Series.id)
                .join(Study, Series.study_id == Study.id)
                .where(Study.study_instance_uid == study_uid)
            )
            return int(count or 0)
