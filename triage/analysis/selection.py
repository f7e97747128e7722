"""Which series of a study a model runs on: rules on DICOM attributes, written as data.

A model's ``triage.json`` holds a ``series`` object, e.g.::

    {"modality": ["CT"], "body_part": ["HEAD", "BRAIN"], "min_slices": 16,
     "exclude_description": ["scout", "bone"], "prefer_kernel": ["UB", "re:^H[0-4]\\d"],
     "exclude_kernel": ["BONE", "LUNG"], "slice_thickness_mm": [0.5, 6.5],
     "prefer_slice_thickness_mm": 5, "contrast": "without"}

Text entries are whole words or phrases, or ``re:`` regular expressions
(`triage.analysis.patterns`). Only image storage SOP classes of the rule's modalities are
candidates: a secondary capture (a dose screen), a dose report or any other non-image object is
never one, whatever its Modality says. Localizers (ImageType LOCALIZER, SCOUT, TOPOGRAM,
SURVIEW or SCANOGRAM, as volume assembly knows them) are always excluded. An
empty BodyPartExamined, ConvolutionKernel, SliceThickness or ContrastBolusAgent does not exclude
a series (many scanners leave them blank); a value that the rule refuses does.

Among the series that qualify, the chosen one is the first by, in this order:

1. kernel: the earliest ``prefer_kernel`` entry its ConvolutionKernel matches (a kernel that
   matches none, or no kernel, comes after every listed one);
2. original before derived images (ImageType ORIGINAL before DERIVED: a reformat is second);
3. slice thickness closest to ``prefer_slice_thickness_mm`` (when given; unknown is last);
4. more images (frames);
5. the higher SeriesNumber (a later reconstruction); then the SeriesInstanceUID, so that the
   choice never depends on the order series arrived in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from triage.analysis.patterns import (
    TextPattern,
    first_match,
    has_agent,
    image_classes,
    patterns,
    sop_class_name,
    sop_class_uids,
    strings,
)
from triage.catalogue import SeriesSummary
from triage.errors import ModelError
from triage.imaging.frames import LOCALIZER_TYPES

CONTRAST = ("any", "without", "with")
KNOWN_KEYS = (
    "modality",
    "sop_class",
    "body_part",
    "description",
    "exclude_description",
    "exclude_image_type",
    "min_slices",
    "prefer_kernel",
    "exclude_kernel",
    "slice_thickness_mm",
    "prefer_slice_thickness_mm",
    "contrast",
)


@dataclass(frozen=True)
class SeriesRule:
    """A model's series rule, checked (see the module docstring for the keys and ranking)."""

    modality: tuple[str, ...] = ()
    body_part: tuple[TextPattern, ...] = ()
    min_slices: int = 16
    #: always holds the ImageType values of localizers (LOCALIZER, SCOUT, TOPOGRAM...)
    exclude_image_type: tuple[str, ...] = tuple(sorted(LOCALIZER_TYPES))
    exclude_description: tuple[TextPattern, ...] = ()
    description: tuple[TextPattern, ...] = ()
    prefer_kernel: tuple[TextPattern, ...] = ()
    exclude_kernel: tuple[TextPattern, ...] = ()
    slice_thickness_mm: tuple[float, float] | None = None
    prefer_slice_thickness_mm: float | None = None
    contrast: str = "any"
    #: the SOP classes that are candidates; () means the image classes of ``modality``
    sop_class: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SeriesRule:
        """Check a ``series`` object; every problem names its key."""
        unknown = sorted(set(data) - set(KNOWN_KEYS))
        if unknown:
            raise ModelError(
                f"series rule has unknown key(s) {', '.join(unknown)}; known: {sorted(KNOWN_KEYS)}"
            )
        modality = tuple(m.upper() for m in strings(data, "modality"))
        sop_class = sop_class_uids(strings(data, "sop_class"))
        if not sop_class:
            image_classes(modality)  # refuses a modality without known image classes
        min_slices = data.get("min_slices", 16)
        if not isinstance(min_slices, int) or isinstance(min_slices, bool) or min_slices < 1:
            raise ModelError("series rule 'min_slices' must be a positive whole number")
        excluded = {v.strip().upper() for v in strings(data, "exclude_image_type")}
        contrast = data.get("contrast", "any")
        if contrast not in CONTRAST:
            raise ModelError(
                f"series rule 'contrast' must be one of {', '.join(CONTRAST)}, got {contrast!r}"
            )
        return cls(
            modality=modality,
            body_part=patterns(data, "body_part"),
            min_slices=min_slices,
            exclude_image_type=tuple(sorted(excluded | LOCALIZER_TYPES)),
            exclude_description=patterns(data, "exclude_description"),
            description=patterns(data, "description"),
            prefer_kernel=patterns(data, "prefer_kernel"),
            exclude_kernel=patterns(data, "exclude_kernel"),
            slice_thickness_mm=_thickness_range(data.get("slice_thickness_mm")),
            prefer_slice_thickness_mm=_preferred_thickness(data.get("prefer_slice_thickness_mm")),
            contrast=contrast,
            sop_class=sop_class,
        )

    @property
    def candidate_classes(self) -> tuple[str, ...]:
        return self.sop_class or image_classes(self.modality)

    def why_not(self, series: SeriesSummary) -> str | None:
        """None when the series qualifies, else the reason in a few words."""
        for check in (
            self._not_an_image,
            self._other_modality,
            self._excluded_image_type,
            self._other_body_part,
            self._excluded_kernel,
            self._other_thickness,
            self._other_contrast,
            self._excluded_description,
        ):
            reason = check(series)
            if reason:
                return reason
        if series.images < self.min_slices:
            return f"{series.images} images, fewer than {self.min_slices}"
        return None

    def applies_to(self, series: Sequence[SeriesSummary]) -> bool:
        """Whether the study is of the model's kind: some series holds images of its modality
        and body part (a blank body part does not exclude). A model that applies but finds no
        series it can use says why the study was not analysed; one that does not apply (a head
        CT model on an MR or a chest study) has nothing to say about it."""
        return any(
            self._not_an_image(s) is None
            and self._other_modality(s) is None
            and self._other_body_part(s) is None
            for s in series
        )

    def _not_an_image(self, series: SeriesSummary) -> str | None:
        if not series.sop_classes:
            return None  # not known (a summary made without them): nothing to check
        allowed = set(self.candidate_classes)
        others = [uid for uid in series.sop_classes if uid not in allowed]
        if not others:
            return None
        names = ", ".join(sop_class_name(uid) for uid in others)
        if len(others) < len(series.sop_classes):
            return f"holds other objects ({names}) besides its images"
        if self.sop_class:
            return f"{names} is not among the rule's sop_class"
        return f"{names} is not {'/'.join(self.modality) or 'CT/MR/PT'} image storage"

    def _other_modality(self, series: SeriesSummary) -> str | None:
        if self.modality and series.modality.upper() not in self.modality:
            return f"modality {series.modality or 'unknown'} is not {'/'.join(self.modality)}"
        return None

    def _excluded_image_type(self, series: SeriesSummary) -> str | None:
        for image_type in series.image_types:
            values = {v.strip().upper() for v in image_type.split("\\")}
            hit = values & set(self.exclude_image_type)
            if hit:
                return f"image type {'/'.join(sorted(hit))}"
        return None

    def _other_body_part(self, series: SeriesSummary) -> str | None:
        body = series.body_part.strip()
        if self.body_part and body and first_match(self.body_part, body) is None:
            return f"body part {body.upper()} is not {'/'.join(p.text for p in self.body_part)}"
        return None

    def _excluded_description(self, series: SeriesSummary) -> str | None:
        text = series.series_description
        hit = first_match(self.exclude_description, text)
        if hit is not None:
            if hit.is_regex:
                return f"description matches {hit.text}"
            return f"description mentions {hit.text.lower()}"
        if self.description and first_match(self.description, text) is None:
            wanted = " or ".join(p.text for p in self.description)
            return f"description {text or '(none)'!r} does not mention {wanted}"
        return None

    def _excluded_kernel(self, series: SeriesSummary) -> str | None:
        kernel = series.convolution_kernel
        hit = first_match(self.exclude_kernel, kernel) if kernel else None
        if hit is not None:
            return f"kernel {kernel} is excluded ({hit.text})"
        return None

    def _other_thickness(self, series: SeriesSummary) -> str | None:
        thickness = series.slice_thickness
        if self.slice_thickness_mm is None or thickness is None:
            return None
        low, high = self.slice_thickness_mm
        if not low <= thickness <= high:
            return f"slice thickness {thickness:g} mm is outside {low:g}-{high:g} mm"
        return None

    def _other_contrast(self, series: SeriesSummary) -> str | None:
        given = has_agent(series.contrast_agent)
        if self.contrast == "without" and given:
            return f"contrast agent given ({series.contrast_agent}); the model wants none"
        if self.contrast == "with" and not given:
            return "no contrast agent named; the model wants contrast"
        return None

    # -- ranking ------------------------------------------------------------------------------

    def rank(self, series: SeriesSummary) -> tuple[Any, ...]:
        """Sort key of a qualifying series: lower is better (see the module docstring)."""
        return (
            self.kernel_rank(series),
            _derived(series),
            self._thickness_distance(series),
            -series.images,
            _descending_number(series.series_number),
            series.series_instance_uid,
        )

    def kernel_rank(self, series: SeriesSummary) -> int:
        """Index of the first ``prefer_kernel`` entry the kernel matches; after all when none."""
        kernel = series.convolution_kernel
        for index, entry in enumerate(self.prefer_kernel):
            if kernel and entry.matches(kernel):
                return index
        return len(self.prefer_kernel)

    def _thickness_distance(self, series: SeriesSummary) -> float:
        if self.prefer_slice_thickness_mm is None:
            return 0.0
        if series.slice_thickness is None:
            return math.inf
        return abs(series.slice_thickness - self.prefer_slice_thickness_mm)

    def why_ranked_below(self, series: SeriesSummary, chosen: SeriesSummary) -> str:
        """Why a qualifying series lost to the chosen one: the first criterion that differs."""
        other = _label(chosen)
        if self.kernel_rank(series) != self.kernel_rank(chosen):
            return (
                f"kernel {series.convolution_kernel or '(none)'} is less preferred than "
                f"{chosen.convolution_kernel} of {other} (prefer_kernel)"
            )
        if _derived(series) != _derived(chosen):
            return f"derived images (ImageType DERIVED); {other} is original"
        if self._thickness_distance(series) != self._thickness_distance(chosen):
            thickness = series.slice_thickness
            have = "unknown" if thickness is None else f"{thickness:g} mm"
            return (
                f"slice thickness {have} is further from {self.prefer_slice_thickness_mm:g} mm "
                f"than {chosen.slice_thickness:g} mm of {other}"
            )
        if series.images != chosen.images:
            return f"{series.images} images; {other} has {chosen.images}"
        if _descending_number(series.series_number) != _descending_number(chosen.series_number):
            return f"ranks equal to {other}, which has the higher series number"
        return f"ranks equal to {other}, which comes first by SeriesInstanceUID"


@dataclass(frozen=True)
class Candidate:
    """One series of a study as a model's rule sees it."""

    series: SeriesSummary
    chosen: bool
    #: why the series is not the one chosen ("" for the chosen one)
    reason: str
    qualifies: bool


@dataclass(frozen=True)
class Selection:
    """A model's choice among the series of a study, and why each other series lost."""

    chosen: SeriesSummary | None
    #: why nothing was chosen ("" when a series was)
    reason: str
    #: every series: the chosen one first, then the other qualifying ones by rank, then the
    #: refused ones in the order given
    candidates: tuple[Candidate, ...]


def explain_selection(rule: SeriesRule, candidates: Sequence[SeriesSummary]) -> Selection:
    """The best qualifying series, and for every series why it was or was not chosen."""
    refusals = [(s, rule.why_not(s)) for s in candidates]
    qualifying = sorted((s for s, why in refusals if why is None), key=rule.rank)
    refused = [Candidate(s, False, why, False) for s, why in refusals if why is not None]
    if not qualifying:
        if not candidates:
            return Selection(None, "the study has no images", ())
        reasons = "; ".join(
            f"{_label(c.series)} ({c.series.modality}): {c.reason}" for c in refused
        )
        return Selection(None, f"no series matches the model's rules ({reasons})", tuple(refused))
    best = qualifying[0]
    ranked = [Candidate(best, True, "", True)] + [
        Candidate(s, False, rule.why_ranked_below(s, best), True) for s in qualifying[1:]
    ]
    return Selection(best, "", tuple(ranked + refused))


def select_series(
    rule: SeriesRule, candidates: Sequence[SeriesSummary]
) -> tuple[SeriesSummary | None, str]:
    """The best qualifying series, or None and why nothing qualified."""
    selection = explain_selection(rule, candidates)
    return selection.chosen, selection.reason


def _label(series: SeriesSummary) -> str:
    return f"series {series.series_number or '?'}"


def _derived(series: SeriesSummary) -> int:
    """1 when any image of the series is DERIVED (a reformat, a MIP), else 0."""
    return int(any(t.split("\\")[0].strip().upper() == "DERIVED" for t in series.image_types))


def _descending_number(number: str) -> tuple[int, float]:
    """Higher series numbers first; a number that is not one comes last."""
    try:
        return (0, -float(number))
    except ValueError:
        return (1, 0.0)


def _thickness_range(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != 2
        or not all(_is_number(v) for v in value)
        or not 0 <= value[0] <= value[1]
    ):
        raise ModelError(
            f"series rule 'slice_thickness_mm' must be [min, max] in mm with 0 <= min <= max, "
            f"got {value!r}"
        )
    return float(value[0]), float(value[1])


def _preferred_thickness(value: Any) -> float | None:
    if value is None:
        return None
    if not _is_number(value) or value <= 0:
        raise ModelError(
            f"series rule 'prefer_slice_thickness_mm' must be a thickness in mm above 0, "
            f"got {value!r}"
        )
    return float(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
