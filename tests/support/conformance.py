"""The codes an object holds, and the codes docs/conformance.md lists."""

from __future__ import annotations

import re

from pydicom.dataset import Dataset

from support.paths import PROJECT_ROOT

DOC = PROJECT_ROOT / "docs" / "conformance.md"


def codes_in(ds: Dataset) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for item in ds.get("ContentSequence", []):
        for keyword in (
            "ConceptNameCodeSequence",
            "ConceptCodeSequence",
            "MeasurementUnitsCodeSequence",
        ):
            for code in item.get(keyword, []):
                found.add((str(code.CodeValue), str(code.CodingSchemeDesignator)))
        for mv in item.get("MeasuredValueSequence", []):
            for code in mv.get("MeasurementUnitsCodeSequence", []):
                found.add((str(code.CodeValue), str(code.CodingSchemeDesignator)))
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
