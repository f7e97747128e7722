"""Reading attribute values as text, the way DICOM writes them."""

from __future__ import annotations

from pydicom.dataset import Dataset


def text_value(ds: Dataset, keyword: str) -> str:
    """The value as text: empty when absent or empty, several values joined with a backslash."""
    value = ds.get(keyword, "")
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def readable_text(ds: Dataset, keyword: str) -> str:
    """As ``text_value``, and empty when the element is corrupt (pydicom raises many types)."""
    try:
        return text_value(ds, keyword)
    except Exception:
        return ""


def frame_value(ds: Dataset, functional_group: str, keyword: str) -> str:
    """A value as text from the top level or, in an enhanced (multi-frame) image, from its
    functional group macro (the shared one first, then the first frame's).

    Enhanced CT and MR keep ConvolutionKernel, SliceThickness and the like in functional
    groups instead of the top level. Empty when absent; never raises on a corrupt element.
    """
    try:
        value = text_value(ds, keyword)
        if value:
            return value
        for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            items = ds.get(groups) or []
            macro = (items[0].get(functional_group) or []) if len(items) else []
            if len(macro):
                value = text_value(macro[0], keyword)
                if value:
                    return value
    except Exception:  # pydicom raises many types on corrupt elements
        return ""
    return ""


def positive_number(text: str) -> float | None:
    """The first value of a DS/IS text as a finite number above zero; None otherwise."""
    try:
        number = float(text.split("\\")[0])
    except ValueError:
        return None
    return number if 0.0 < number < float("inf") else None


def contrast_agent(ds: Dataset) -> str:
    """The contrast or bolus agent given, as text: ContrastBolusAgent or, in enhanced images,
    the first agent's code meaning. Empty when none is named; never raises."""
    agent = readable_text(ds, "ContrastBolusAgent")
    if agent:
        return agent
    try:
        items = ds.get("ContrastBolusAgentSequence") or []
        return text_value(items[0], "CodeMeaning") if len(items) else ""
    except Exception:  # pydicom raises many types on corrupt elements
        return ""
