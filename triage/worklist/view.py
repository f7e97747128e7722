"""Worklist rows as JSON (stable keys, documented in the README) and as a terminal table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from triage.catalogue import FindingRow, WorklistRow
from triage.results import DeliveryState

_STYLE = {"urgent": "bold red", "routine": "green", "not analysed": "yellow"}


def worklist_json(rows: Sequence[WorklistRow]) -> list[dict[str, Any]]:
    return [
        {
            "study_instance_uid": r.study_instance_uid,
            "accession_number": r.accession_number,
            "modality": r.modality,
            "study_description": r.study_description,
            "state": r.state,
            "priority": r.priority,
            # a re-run's lower priority that waits for a person (`triage ack`); null: none
            "held_priority": r.held_priority,
            "reason": r.reason,
            "received_at": r.received_at.isoformat() + "Z",
            "triaged_at": r.triaged_at.isoformat() + "Z" if r.triaged_at else None,
            "instances": r.instances,
            # the worker that triaged the study, or triages it now (TRIAGE_WORKER_NAME)
            "worker": r.worker,
            "delivery": r.delivery,
            "findings": [finding_json(f) for f in sorted(r.findings, key=lambda f: -f.probability)],
            # models in shadow mode: recorded here only, never in the priority or the PACS
            "shadow_findings": [
                finding_json(f) for f in sorted(r.shadow_findings, key=lambda f: -f.probability)
            ],
        }
        for r in rows
    ]


def finding_json(f: FindingRow) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": f.name,
        "code": f.code,
        "probability": round(f.probability, 4),
        "threshold": f.threshold,
        "priority": f.priority,
        "model": f.model_name,
        "version": f.model_version,
        # out of distribution: the input's score, the model's threshold (null: not checked)
        # and whether the input was unlike the training data (then never urgent)
        "ood_score": None if f.ood_score is None else round(f.ood_score, 3),
        "ood_threshold": f.ood_threshold,
        "uncertain": f.uncertain,
    }
    if f.lesion_volume_ml is not None:  # a segmentation model's lesion
        out["lesion_volume_ml"] = f.lesion_volume_ml
        out["lesion_centre_lps"] = list(f.lesion_centre_lps) if f.lesion_centre_lps else None
    if f.key_point_lps is not None:  # where the finding is: the key image's slice and marker
        out["key_point_lps"] = list(f.key_point_lps)
    return out


def row_notes(r: WorklistRow) -> list[str]:
    """What a reader must know beside the priority: why not analysed, a held downgrade, an
    uncertain input, an undelivered result (the terminal table's notes, the web page's)."""
    reasons = [r.reason] if r.reason else []
    if r.held_priority:
        reasons.append(
            f"a re-run says {r.held_priority}; it stays {r.priority or 'pending'} until a person "
            f"accepts it: `triage ack {r.study_instance_uid} --reason ...`"
        )
    uncertain = [f for f in r.findings if f.uncertain]
    if uncertain:
        reasons.append(
            "uncertain: input unlike the training data of "
            + ", ".join(
                f"{f.model_name} (OOD {f.ood_score:.1f} > {f.ood_threshold:.1f})"
                for f in uncertain
                if f.ood_score is not None and f.ood_threshold is not None
            )
            + "; not made urgent by it"
        )
    if r.delivery == DeliveryState.DEAD:
        reasons.append("the result could not be delivered to the PACS (see `triage outbox`)")
    return reasons


def state_marks(r: WorklistRow) -> list[str]:
    """Short marks after the state: a held downgrade, uncertain, SR undelivered."""
    marks = [f"{r.held_priority} held"] if r.held_priority else []
    if any(f.uncertain for f in r.findings):
        marks.append("uncertain")
    if r.delivery == DeliveryState.DEAD:
        marks.append("SR undelivered")
    return marks


def top_finding_text(r: WorklistRow) -> str:
    """The top finding's name, or "none flagged" when under its threshold ("-": no finding)."""
    top = r.top_finding
    if top is None:
        return "-"
    # a probability under the threshold is not a finding: do not name it as one
    return top.name if top.probability >= top.threshold else "none flagged"


def worklist_table(rows: Sequence[WorklistRow], width: int = 120) -> Table:
    """One line per study; reasons for *not analysed* go in numbered notes under the table.

    Below 110 columns the study description and arrival time are left out so that what
    matters (priority, accession, finding, state) stays readable.
    """
    wide = width >= 110
    table = Table(
        title="Worklist: most urgent first, then by arrival",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
    )
    names = ["#", "Priority", "Accession", "Study", "Top finding", "P", "State", "Received"]
    if not wide:
        names = [n for n in names if n not in ("Study", "Received")]
    for name in names:
        table.add_column(
            name,
            no_wrap=name != "Study",
            overflow="ellipsis",
            justify="right" if name in ("#", "P") else "left",
        )
    notes: list[str] = []
    for i, r in enumerate(rows, 1):
        top = r.top_finding
        priority = r.priority or "pending"
        reasons = row_notes(r)
        state = ", ".join([r.state, *state_marks(r)])
        if reasons:
            notes.append(
                f"[{len(notes) + 1}] {r.accession_number or r.study_instance_uid}: "
                + "; ".join(reasons)
            )
            state = f"{state} [{len(notes)}]" if wide else f"see [{len(notes)}]"
        cells: dict[str, str | Text] = {
            "#": str(i),
            "Priority": Text(priority, style=_STYLE.get(priority, "")),
            "Accession": r.accession_number or "-",
            "Study": " ".join(x for x in (r.modality, r.study_description) if x) or "-",
            "Top finding": top_finding_text(r),
            "P": f"{top.probability:.2f}" if top else "-",
            "State": state,
            "Received": r.received_at.strftime("%H:%M:%S"),
        }
        table.add_row(*(cells[n] for n in names))
    if notes:
        table.caption = "\n".join(notes)
        table.caption_justify = "left"
    return table
