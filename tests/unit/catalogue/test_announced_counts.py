"""A study whose senders announced how many instances it has is claimed as soon as they are all
here, never earlier, and never when its counts are wrong: then the quiet period decides.

Every claim here asks for a quiet period of an hour, so a study claimed was claimed on its
counts; on SQLite and on a real PostgreSQL (the ``cat`` fixture)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from pydicom.uid import CTImageStorage, SecondaryCaptureImageStorage, XRayRadiationDoseSRStorage
from sqlalchemy import create_engine, text

from triage.catalogue import RECEIVING, TRIAGING, WRONG_COUNT, Catalogue, InstanceRecord, utcnow
from triage.catalogue.schema import _config

HOUR = 3600.0
STUDY = "1.2.3"


def receive(
    cat: Catalogue,
    series: str,
    n: int,
    *,
    count: int | None = None,
    study_count: int | None = None,
    sop_class: str = CTImageStorage,
) -> bool:
    """Catalogue instance ``n`` of ``series`` (of STUDY), announcing ``count`` for its series
    and ``study_count`` for the study."""
    sop = f"{STUDY}.{series}.{n}"
    return cat.record_instance(
        InstanceRecord(
            study_instance_uid=STUDY,
            series_instance_uid=f"{STUDY}.{series}",
            sop_instance_uid=sop,
            sop_class_uid=sop_class,
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            key=f"raw/{STUDY}/{STUDY}.{series}/{sop}.dcm",
            size=10,
            triage_input=sop_class == CTImageStorage,
            modality="CT",
            announced_series_instances=count,
            announced_study_instances=study_count,
        )
    )


def claimed(cat: Catalogue, on_announced_count: bool = True) -> bool:
    claim = cat.claim_next("w1", quiet_seconds=HOUR, on_announced_count=on_announced_count)
    return claim is not None and claim.study_instance_uid == STUDY


def test_a_series_with_every_announced_image_is_claimed_at_once(cat: Catalogue) -> None:
    for n in range(1, 4):
        assert not claimed(cat), f"claimed with {n - 1} of 3 images"
        receive(cat, "1", n, count=3)
    assert receive(cat, "1", 3, count=3) is False  # a duplicate counts once
    assert claimed(cat)
    assert cat.study_state(STUDY) == (TRIAGING, 1)


def test_a_missing_image_keeps_the_study_waiting_for_its_quiet_period(cat: Catalogue) -> None:
    receive(cat, "1", 1, count=3)
    receive(cat, "1", 3, count=3)
    assert not claimed(cat)
    claim = cat.claim_next("w1", quiet_seconds=0)  # the quiet period still completes it
    assert claim is not None and claim.study_instance_uid == STUDY


def test_every_analysed_series_must_be_complete_and_counted(cat: Catalogue) -> None:
    receive(cat, "1", 1, count=1)
    receive(cat, "2", 1, count=2)
    assert not claimed(cat)  # series 2 is not complete
    receive(cat, "2", 2, count=2)
    receive(cat, "3", 1)  # an analysed series that said nothing: it may go on
    assert not claimed(cat)


def test_other_objects_need_no_count_of_their_own(cat: Catalogue) -> None:
    receive(cat, "1", 1, count=2)
    receive(cat, "9", 1, sop_class=XRayRadiationDoseSRStorage)
    receive(cat, "8", 1, sop_class=SecondaryCaptureImageStorage, count=5)  # its count is not used
    receive(cat, "1", 2, count=2)
    assert claimed(cat)


def test_more_images_than_announced_wait_for_the_quiet_period(cat: Catalogue) -> None:
    for n in range(1, 4):
        receive(cat, "1", n, count=2)
    assert not claimed(cat)


def test_counts_that_disagree_wait_for_the_quiet_period(cat: Catalogue) -> None:
    receive(cat, "1", 1, count=3)
    receive(cat, "1", 2, count=2)  # fewer, said later
    assert not claimed(cat)
    receive(cat, "1", 3, count=3)
    assert not claimed(cat)  # three are here, as the first said: the counts stay wrong


def test_an_image_without_the_count_its_series_announced_waits(cat: Catalogue) -> None:
    receive(cat, "1", 1, count=2)
    receive(cat, "1", 2)
    assert not claimed(cat)


def test_a_count_that_cannot_be_right_waits(cat: Catalogue) -> None:
    receive(cat, "1", 1, count=WRONG_COUNT)
    assert not claimed(cat)
    receive(cat, "2", 1, count=1, study_count=WRONG_COUNT)
    assert not claimed(cat)


def test_a_study_count_of_every_kind_of_instance_completes_the_study(cat: Catalogue) -> None:
    receive(cat, "1", 1, study_count=3)  # the series say nothing: the study's count is enough
    receive(cat, "1", 2, study_count=3)
    assert not claimed(cat)
    receive(cat, "9", 1, sop_class=XRayRadiationDoseSRStorage)  # counted, without a count
    assert claimed(cat)


def test_a_study_count_must_be_met_and_agree(cat: Catalogue) -> None:
    receive(cat, "1", 1, count=1, study_count=3)
    assert not claimed(cat)  # the series is complete, the study is not
    receive(cat, "2", 1, study_count=2)
    receive(cat, "2", 2, study_count=3)
    assert not claimed(cat)  # three are here, but one said two


def test_a_study_count_does_not_excuse_an_unmet_series_count(cat: Catalogue) -> None:
    receive(cat, "1", 1, count=3, study_count=2)
    receive(cat, "2", 1, study_count=2)
    assert not claimed(cat)


def test_off_the_counts_are_kept_but_only_the_quiet_period_completes(cat: Catalogue) -> None:
    receive(cat, "1", 1, count=1)
    assert not claimed(cat, on_announced_count=False)
    assert claimed(cat)  # the same study, the setting on


def test_an_image_after_an_early_claim_reopens_the_study_for_the_quiet_period(
    cat: Catalogue,
) -> None:
    receive(cat, "1", 1, count=1)
    assert claimed(cat)
    receive(cat, "1", 2, count=1)
    assert cat.study_state(STUDY) == (RECEIVING, 2)
    assert not claimed(cat)  # now more than announced
    claim = cat.claim_next("w1", quiet_seconds=0)
    assert claim is not None and claim.generation == 2


def test_a_study_without_any_count_is_not_claimed_early(cat: Catalogue) -> None:
    receive(cat, "1", 1)
    receive(cat, "9", 1, sop_class=XRayRadiationDoseSRStorage)
    assert not claimed(cat)


def test_a_series_received_before_the_counts_were_kept_is_not_complete_by_count(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'catalogue.db'}"
    engine = create_engine(url)
    with engine.connect() as connection:
        command.upgrade(_config(connection), "0003")
        connection.execute(
            text(
                "INSERT INTO studies (id, study_instance_uid, accession_number, patient_id, "
                "study_description, study_date, state, generation, first_received_at, "
                "last_instance_at) VALUES (1, :uid, '', '', '', '', 'receiving', 1, :at, :at)"
            ),
            {"uid": STUDY, "at": utcnow()},
        )
        connection.execute(
            text(
                "INSERT INTO series (id, study_id, series_instance_uid, modality, body_part, "
                "series_description, series_number) VALUES (1, 1, :uid, 'CT', '', '', '')"
            ),
            {"uid": f"{STUDY}.1"},
        )
        connection.execute(
            text(
                "INSERT INTO instances (series_id, sop_instance_uid, sop_class_uid, "
                "transfer_syntax_uid, image_type, key, size, received_at) "
                "VALUES (1, :uid, :cls, '1.2.840.10008.1.2.1', '', 'raw/x.dcm', 10, :at)"
            ),
            {"uid": f"{STUDY}.1.1", "cls": CTImageStorage, "at": utcnow()},
        )
        connection.commit()
    engine.dispose()
    cat = Catalogue(url)  # upgraded as it opens
    try:
        receive(cat, "1", 2, count=2)  # two are here, but what the first said is not known
        assert not claimed(cat)
    finally:
        cat.close()
