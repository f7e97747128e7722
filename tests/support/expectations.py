"""What a clean run of the shipped model gives, to compare a node's results with."""

from __future__ import annotations

from sqlalchemy import select

from triage.catalogue import Catalogue, Result, Study


def expected_sr_uid(catalogue: Catalogue, study_uid: str) -> str | None:
    """The SR's SOPInstanceUID a clean run gives: the first revision of the active model's
    chain, as the catalogue released it to the outbox (None before it is released). A crash
    and a run again in between must not have made a second revision: the same study and
    result give the same document, so a re-run finds the chain already says it."""
    with catalogue.session() as s:
        models = list(
            s.scalars(
                select(Result.model_name)
                .join(Study, Study.id == Result.study_id)
                .where(Study.study_instance_uid == study_uid, Result.role == "active")
            )
        )
    if not models:
        return None
    (model,) = models
    head = catalogue.chain_heads(study_uid).get(model)
    if head is None or head.released_number is None:
        return None
    assert head.released_number == 1, (
        f"{model}'s chain is at revision {head.released_number}: a run again changed the result"
    )
    return head.released_sr_sop_instance_uid
