"""The building blocks of series selection rules: words, regular expressions, SOP classes.

A rule entry such as ``"dose"`` matches a whole word or phrase of the attribute, in any case:
"Dose Report" and "DOSE_INFO" mention it, "iDose" does not (a letter or digit on either side is
part of another word). Words of a phrase may be separated by any punctuation or space. An entry
that starts with ``re:`` is a regular expression (Python syntax, any case) searched in the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.uid import (
    UID,
    CTImageStorage,
    EnhancedCTImageStorage,
    EnhancedMRImageStorage,
    EnhancedPETImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
    LegacyConvertedEnhancedMRImageStorage,
    LegacyConvertedEnhancedPETImageStorage,
    MRImageStorage,
    PositronEmissionTomographyImageStorage,
    UID_dictionary,
)

from triage.errors import ModelError

REGEX_PREFIX = "re:"
# A letter or digit next to a word makes it part of another word; "_" and punctuation do not
_NOT_AFTER_WORD = r"(?<![^\W_])"
_NOT_BEFORE_WORD = r"(?![^\W_])"
_BETWEEN_WORDS = r"[\W_]+"
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+")

#: The image storage SOP classes a volume can be made of, per Modality. Anything else in a
#: study (secondary captures such as dose screens, dose reports and other SRs, presentation
#: states, waveforms) is never a candidate, whatever its Modality says.
IMAGE_STORAGE: Mapping[str, tuple[str, ...]] = {
    "CT": (CTImageStorage, EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage),
    "MR": (MRImageStorage, EnhancedMRImageStorage, LegacyConvertedEnhancedMRImageStorage),
    "PT": (
        PositronEmissionTomographyImageStorage,
        EnhancedPETImageStorage,
        LegacyConvertedEnhancedPETImageStorage,
    ),
}

#: ContrastBolusAgent values that scanners write to say that no agent was given
NO_AGENT = frozenset({"NONE", "NO", "N/A", "NA", "NIL", "-", "0", "NO CONTRAST", "WITHOUT"})


@dataclass(frozen=True)
class TextPattern:
    """One entry of a rule, as written, and what it matches."""

    text: str
    regex: re.Pattern[str]

    @classmethod
    def parse(cls, entry: str, key: str) -> TextPattern:
        """A plain entry is a word or phrase; ``re:...`` a regular expression."""
        if entry.startswith(REGEX_PREFIX):
            expression = entry[len(REGEX_PREFIX) :]
            if not expression:
                raise ModelError(f"series rule {key!r}: {entry!r} has no regular expression")
            try:
                return cls(entry, re.compile(expression, re.IGNORECASE))
            except re.error as exc:
                raise ModelError(
                    f"series rule {key!r}: {entry!r} is not a valid regular expression ({exc})"
                ) from None
        words = entry.split()
        if not words:
            raise ModelError(f"series rule {key!r}: an entry is empty; give a word or re:...")
        phrase = _BETWEEN_WORDS.join(re.escape(word) for word in words)
        return cls(entry, re.compile(_NOT_AFTER_WORD + phrase + _NOT_BEFORE_WORD, re.IGNORECASE))

    def matches(self, value: str) -> bool:
        return self.regex.search(value) is not None

    @property
    def is_regex(self) -> bool:
        return self.text.startswith(REGEX_PREFIX)


def strings(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    """The list of strings under ``key`` (absent: none)."""
    value = data.get(key, ())
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ModelError(f"series rule {key!r} must be a list of strings, got {value!r}")
    if not all(isinstance(v, str) for v in value):
        raise ModelError(f"series rule {key!r} must be a list of strings")
    return tuple(value)


def patterns(data: Mapping[str, Any], key: str) -> tuple[TextPattern, ...]:
    """The words and regular expressions under ``key``."""
    return tuple(TextPattern.parse(entry, key) for entry in strings(data, key))


def first_match(entries: Sequence[TextPattern], value: str) -> TextPattern | None:
    return next((p for p in entries if p.matches(value)), None)


def sop_class_uids(entries: Sequence[str], key: str = "sop_class") -> tuple[str, ...]:
    """SOP classes by UID or by keyword (``"CTImageStorage"``), checked."""
    keywords = {info[4]: uid for uid, info in UID_dictionary.items() if info[1] == "SOP Class"}
    out = []
    for entry in entries:
        if entry in keywords:
            out.append(keywords[entry])
        elif len(entry) <= 64 and _UID.fullmatch(entry):
            out.append(entry)
        else:
            raise ModelError(
                f"series rule {key!r}: {entry!r} is neither a SOP Class UID nor a SOP class "
                "keyword such as CTImageStorage"
            )
    return tuple(out)


def image_classes(modalities: Sequence[str]) -> tuple[str, ...]:
    """The image storage SOP classes of these modalities (all known ones when none named)."""
    wanted = modalities or tuple(IMAGE_STORAGE)
    unknown = [m for m in wanted if m not in IMAGE_STORAGE]
    if unknown:
        raise ModelError(
            f"series rule 'modality': no image SOP classes are known for {', '.join(unknown)} "
            f"(known: {', '.join(IMAGE_STORAGE)}); name them in 'sop_class'"
        )
    return tuple(uid for m in wanted for uid in IMAGE_STORAGE[m])


def sop_class_name(uid: str) -> str:
    """A SOP class as people read it ("Secondary Capture Image Storage")."""
    return UID(uid).name if uid else "no SOP class"


def has_agent(agent: str) -> bool:
    """Whether a ContrastBolusAgent value names an agent (not empty, not "NONE" and the like)."""
    text = " ".join(agent.split()).upper()
    return bool(text) and text not in NO_AGENT
