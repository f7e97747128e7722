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
