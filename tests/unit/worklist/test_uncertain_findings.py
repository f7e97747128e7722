"""The worklist shows an uncertain finding (input unlike the model's training data): in the JSON
with its score and threshold, and in the terminal table as a note; never hidden."""

from __future__ import annotations

from datetime import datetime

from rich.console import Console

from triage.catalogue import FindingRow, WorklistRow
from triage.worklist.view import worklist_json, worklist_table


def row(score: float | None) -> WorklistRow:
    finding = FindingRow(
        "ich_classifier",
        "1.0.0+ead40600",
        "Intracranial hemorrhage",
        "SCT:1386000",
        0.962,
        0.228,
        "routine" if score and score > 8.13 else "urgent",
        ood_score=score,
        ood_threshold=None if score is None else 8.13,
    )
    return WorklistRow(
        study_instance_uid="1.2.3",
        accession_number="A1",
        modality="CT",
        study_description="CT HEAD",
        state="triaged",
        priority=finding.priority,
        reason=None,
        received_at=datetime(2026, 12, 1, 12, 0),
        triaged_at=datetime(2026, 12, 1, 12, 1),
        instances=28,
        findings=(finding,),
    )


def test_an_uncertain_finding_is_in_the_json_and_noted_in_the_table() -> None:
    (shown,) = worklist_json([row(16.8)])
    (finding,) = shown["findings"]
    assert (finding["ood_score"], finding["ood_threshold"], finding["uncertain"]) == (
        16.8,
        8.13,
        True,
    )
    assert shown["priority"] == "routine"
    console = Console(width=140, record=True)
    console.print(worklist_table([row(16.8)], width=140))
    text = console.export_text()
    assert "uncertain: input unlike the training data of ich_classifier (OOD 16.8 > 8.1)" in text


def test_a_finding_like_the_training_data_or_unchecked_is_not_uncertain() -> None:
    for score in (3.2, None):
        (shown,) = worklist_json([row(score)])
        (finding,) = shown["findings"]
        assert finding["uncertain"] is False
        assert finding["ood_score"] == score
        console = Console(width=140, record=True)
        console.print(worklist_table([row(score)], width=140))
        assert "uncertain" not in console.export_text()
