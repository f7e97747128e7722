"""The conformance statement lists every code that appears in the SRs the node writes."""

from __future__ import annotations

from pydicom.sr.codedict import codes
from support.conformance import codes_in, documented_codes
from support.factories import phantom_ct_series

from triage.report.sr import build_triage_sr
from triage.results import ModelResult, Priority


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
