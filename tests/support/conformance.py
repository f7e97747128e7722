"""The codes an object holds, and the codes docs/conformance.md lists."""

from __future__ import annotations

import re

from pydicom.dataset import Dataset

from support.paths import PROJECT_ROOT

DOC = PROJECT_ROOT / "docs" / "conformance.md"


def codes_in(ds: Dataset) -> set[tuple[str, str]]:
    """Every code anywhere in the object: each item of every *CodeSequence, at any depth (the
    content tree, the SEG's segment descriptions, the KOS title, the evidence...)."""
    found: set[tuple[str, str]] = set()
    for element in ds:
        if element.VR != "SQ":
            continue
        for item in element.value:
            if element.keyword.endswith("CodeSequence"):
                value = (
                    item.get("CodeValue") or item.get("LongCodeValue") or item.get("URNCodeValue")
                )
                if value is not None:
                    found.add((str(value), str(item.get("CodingSchemeDesignator", ""))))
            found |= codes_in(item)
    return found


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


def all_codes_in(ds: Dataset) -> set[tuple[str, str]]:
    """Every coded entry anywhere in the data set (any sequence item with CodeValue and
    CodingSchemeDesignator): the codes of a SEG or KOS outside its content tree too."""
    found: set[tuple[str, str]] = set()
    for element in ds:
        if element.VR != "SQ":
            continue
        for item in element.value:
            value = item.get("CodeValue") or item.get("LongCodeValue") or item.get("URNCodeValue")
            if value and "CodingSchemeDesignator" in item:
                found.add((str(value), str(item.CodingSchemeDesignator)))
            found |= all_codes_in(item)
    return found
