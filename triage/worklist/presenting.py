"""What the pages show, in words and small pictures: a worklist row, a study's age and
timeline, a model's ROC curve and score histogram (inline SVG: no JavaScript, no CDN)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any

from triage.catalogue import WorklistRow, utcnow
from triage.catalogue.worklist import Timeline
from triage.worklist.view import row_notes, state_marks, top_finding_text

#: the worklist's time filter: hours -> words (0: all)
PERIODS = ((0, "any time"), (1, "last hour"), (6, "last 6 hours"), (24, "last 24 hours"),
           (72, "last 3 days"), (168, "last week"))  # fmt: skip


@dataclass(frozen=True)
class RowView:
    uid: str
    accession: str
    study: str
    priority: str
    css: str
    age: str
    received: str
    top_finding: str
    probability: str
    state: str
    notes: list[str]
    held_priority: str | None
    reason: str | None


def row_view(r: WorklistRow, now: datetime | None = None) -> RowView:
    priority = r.priority or "pending"
    top = r.top_finding
    return RowView(
        uid=r.study_instance_uid,
        accession=r.accession_number,
        study=_study_text(r),
        priority=priority,
        css=priority.replace(" ", "-"),
        age=age_text(r.received_at, now),
        received=r.received_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        top_finding=top_finding_text(r),
        probability=f"{top.probability:.2f}" if top else "-",
        state=", ".join([r.state, *state_marks(r)]),
        notes=row_notes(r),
        held_priority=r.held_priority,
        reason=r.reason,
    )


def _study_text(r: WorklistRow) -> str:
    """Modality and description ("CT head"), the modality once when the description has it."""
    description = r.study_description
    if r.modality and description.upper().startswith(r.modality.upper()):
        return description
    return " ".join(x for x in (r.modality, description) if x) or "-"


def age_text(at: datetime, now: datetime | None = None) -> str:
    seconds = max(0, int(((now or utcnow()) - at).total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def matches(
    r: WorklistRow, modality: str, state: str, hours: int, now: datetime | None = None
) -> bool:
    """The worklist's filters: a modality, a state (or priority), received in the last hours."""
    if modality and modality not in r.modality.split("/"):
        return False
    if state and state not in (r.state, r.priority or "pending"):
        return False
    return not hours or ((now or utcnow()) - r.received_at).total_seconds() <= hours * 3600


def timeline_entries(t: Timeline) -> list[tuple[str, str]]:
    def at(when: datetime | None) -> str:
        return when.strftime("%Y-%m-%d %H:%M:%S UTC") if when else "not yet"

    def after(when: datetime | None) -> str:
        if when is None:
            return "not yet"
        return (
            f"{at(when)} ({(when - t.last_instance_at).total_seconds():.1f} s after the last image)"
        )

    entries = [
        ("First image received", at(t.received_at)),
        ("Last image received", at(t.last_instance_at)),
        ("Triaged", after(t.triaged_at)),
        ("Result delivered to the PACS", after(t.delivered_at)),
    ]
    stages = ", ".join(f"{k} {v:.2f} s" for k, v in sorted(t.timings.items()))
    if stages:
        entries.append(("Stage times", stages))
    return entries


def _svg(width: int, height: int, body: str, label: str) -> str:
    return (
        f'<svg class="plot" role="img" aria-label="{escape(label)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">{body}</svg>'
    )


def roc_svg(scores: Sequence[dict[str, Any]], threshold: float) -> str:
    """The ROC curve of an evaluation's scored studies (label 1/0, probability), with the
    operating point at the threshold; "" when the set lacks positives or negatives."""
    points = [(float(s["probability"]), int(s["label"])) for s in scores
              if s.get("probability") is not None and s.get("label") in (0, 1)]  # fmt: skip
    positives = sum(label for _, label in points)
    negatives = len(points) - positives
    if not positives or not negatives:
        return ""
    size, pad = 260, 30
    curve = [(0.0, 0.0)]
    tp = fp = 0
    for _p, label in sorted(points, key=lambda x: -x[0]):
        tp, fp = tp + label, fp + 1 - label
        curve.append((fp / negatives, tp / positives))

    def xy(fpr: float, tpr: float) -> str:
        return f"{pad + fpr * (size - 2 * pad):.1f},{size - pad - tpr * (size - 2 * pad):.1f}"

    at_threshold = [(int(p >= threshold), label) for p, label in points]
    op_tpr = sum(f and label for f, label in at_threshold) / positives
    op_fpr = sum(f and not label for f, label in at_threshold) / negatives
    ox, oy = xy(op_fpr, op_tpr).split(",")
    body = (
        f'<line x1="{pad}" y1="{size - pad}" x2="{size - pad}" y2="{pad}" stroke="#bbb" '
        'stroke-dasharray="4"/>'
        f'<polyline fill="none" stroke="#1f5fbf" stroke-width="2" '
        f'points="{" ".join(xy(a, b) for a, b in curve)}"/>'
        f'<circle cx="{ox}" cy="{oy}" r="4" fill="#c62828"/>'
        f'<text x="{size / 2}" y="{size - 6}" text-anchor="middle" font-size="11">'
        "1 - specificity</text>"
        f'<text x="10" y="{size / 2}" font-size="11" transform="rotate(-90 10 {size / 2})" '
        'text-anchor="middle">sensitivity</text>'
    )
    return _svg(size, size, body, f"ROC curve; operating point at threshold {threshold:g}")


def histogram_svg(counts: Sequence[int], threshold: float) -> str:
    """Ten bins of probability 0-1 as bars, the threshold as a line."""
    width, height, pad = 300, 160, 20
    most = max(counts, default=0) or 1
    bar = (width - 2 * pad) / max(len(counts), 1)
    bars = "".join(
        f'<rect x="{pad + i * bar + 1:.1f}" y="{height - pad - c / most * (height - 2 * pad):.1f}" '
        f'width="{bar - 2:.1f}" height="{c / most * (height - 2 * pad):.1f}" fill="#5b8def">'
        f"<title>{i / 10:.1f}-{(i + 1) / 10:.1f}: {c}</title></rect>"
        for i, c in enumerate(counts)
    )
    tx = pad + threshold * (width - 2 * pad)
    body = (
        bars
        + f'<line x1="{tx:.1f}" y1="{pad / 2}" x2="{tx:.1f}" y2="{height - pad}" stroke="#c62828"/>'
        + f'<text x="{pad}" y="{height - 4}" font-size="11">0</text>'
        + f'<text x="{width - pad}" y="{height - 4}" font-size="11" text-anchor="end">1</text>'
    )
    return _svg(width, height, body, f"score histogram, threshold {threshold:g}")
