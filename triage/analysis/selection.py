"""Which series of a study a model runs on: rules on DICOM attributes, written as data.

A model's ``triage.json`` holds a ``series`` object, e.g.::

    {"modality": ["CT"], "body_part": ["HEAD", "BRAIN"], "min_slices": 16,
     "exclude_image_type": ["LOCALIZER"], "exclude_description": ["scout", "topogram"]}

Localizers are always excluded. An empty BodyPartExamined does not exclude a series (many
scanners leave it blank); a different one does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from triage.catalogue import SeriesSummary
from triage.errors import ModelError


@dataclass(frozen=True)
class SeriesRule:
    modality: tuple[str, ...] = ()
    body_part: tuple[str, ...] = ()
    min_slices: int = 16
    exclude_image_type: tuple[str, ...] = ("LOCALIZER",)
    exclude_description: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SeriesRule:
        known = {"modality", "body_part", "min_slices", "exclude_image_type", "exclude_description"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelError(
                f"series rule has unknown key(s) {', '.join(unknown)}; known: {sorted(known)}"
            )

        def words(key: str, default: Sequence[str] = ()) -> tuple[str, ...]:
            value = data.get(key, default)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ModelError(f"series rule {key!r} must be a list of strings")
            return tuple(v.upper() for v in value)

        min_slices = data.get("min_slices", 16)
        if not isinstance(min_slices, int) or min_slices < 1:
            raise ModelError("series rule 'min_slices' must be a positive whole number")
        excluded = set(words("exclude_image_type")) | {"LOCALIZER"}
        return cls(
            words("modality"),
            words("body_part"),
            min_slices,
            tuple(sorted(excluded)),
            words("exclude_description"),
        )

    def why_not(self, series: SeriesSummary) -> str | None:
        """None when the series qualifies, else the reason in a few words."""
        if self.modality and series.modality.upper() not in self.modality:
            return f"modality {series.modality or 'unknown'} is not {'/'.join(self.modality)}"
        body = series.body_part.upper()
        if self.body_part and body and body not in self.body_part:
            return f"body part {body} is not {'/'.join(self.body_part)}"
        description = series.series_description.lower()
        for word in self.exclude_description:
            if word.lower() in description:
                return f"description mentions {word.lower()}"
        for image_type in series.image_types:
            values = {v.strip().upper() for v in image_type.split("\\")}
            hit = values & set(self.exclude_image_type)
            if hit:
                return f"image type {'/'.join(sorted(hit))}"
        if len(series.keys) < self.min_slices:
            return f"{len(series.keys)} images, fewer than {self.min_slices}"
        return None


def select_series(
    rule: SeriesRule, candidates: Sequence[SeriesSummary]
) -> tuple[SeriesSummary | None, str]:
    """The best qualifying series (most images), or None and why nothing qualified."""
    qualifying = [s for s in candidates if rule.why_not(s) is None]
    if qualifying:
        best = max(qualifying, key=lambda s: (len(s.keys), s.series_number))
        return best, ""
    if not candidates:
        return None, "the study has no images"
    reasons = "; ".join(
        f"series {s.series_number or '?'} ({s.modality}): {rule.why_not(s)}" for s in candidates
    )
    return None, f"no series matches the model's rules ({reasons})"
