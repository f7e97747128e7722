"""The codes an object holds, and the codes docs/conformance.md lists."""

from __future__ import annotations

import re

from pydicom.dataset import Dataset

from support.paths import PROJECT_ROOT

DOC = PROJECT_ROOT / "docs" / "conformance.md"


def documented_codes() -> set[tuple[str, str]]:
    text = DOC.read_text()
    rows = re.findall(r"^\| ([^|]+) \| ([A-Z0-9]+) \|", text, flags=re.M)
    out: set[tuple[str, str]] = set()
    for values, scheme in rows:
        for value in re.split(r",\s*", values.strip()):
            if "-" in value and scheme == "DCM":  # a range such as 121012-121015
                lo, hi = value.split("-")
                out |= {(str(v), scheme) for v in range(int(lo), int(hi) + 1)}
            else:
                out.add((value, scheme))
    return out


def codes_in(ds: Dataset) -> set[tuple[str, str]]:
    """Every coded entry anywhere in the object (any sequence item with a code value and a
    coding scheme): the content tree of an SR or KOS, a SEG's segment descriptions, and what
    highdicom adds outside them (contributing equipment, purposes of reference...)."""
    found: set[tuple[str, str]] = set()
    for element in ds:
        if element.VR != "SQ":
            continue
        for item in element.value:
            value = item.get("CodeValue") or item.get("LongCodeValue") or item.get("URNCodeValue")
            if value and "CodingSchemeDesignator" in item:
                found.add((str(value), str(item.CodingSchemeDesignator)))
            found |= codes_in(item)
    return found
