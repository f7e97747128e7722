"""The conformance statement lists every code that appears in the SRs the node writes."""

from __future__ import annotations

import re
from pathlib import Path

from factories import phantom_ct_series
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from triage.report.sr import build_triage_sr
from triage.results import ModelResult, Priority

DOC = Path(__file__).resolve().parents[1] / "docs" / "conformance.md"


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


def test_every_code_in_a_written_sr_is_in_the_conformance_statement() -> None:
    headers = phantom_ct_series(
        "test_conformance",
        shape=(32, 32, 5),
        study_instance_uid="1.2.3.4",
        series_instance_uid="1.2.3.4.5",
    )
    results = [
        ModelResult(
            "ich_classifier",
            "1.0.0",
            codes.SCT.IntracranialHemorrhage,
            p,
            0.5,
            priority,
            "1.2.3.4.5",
        )
        for p, priority in ((0.9, Priority.URGENT), (0.1, Priority.ROUTINE))
    ]
    written: set[tuple[str, str]] = set()
    for result in results:
        written |= codes_in(build_triage_sr(headers, [result], software_version="test"))
    missing = written - documented_codes()
    assert not missing, f"codes in the SR but not in docs/conformance.md: {sorted(missing)}"
