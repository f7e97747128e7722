"""The conformance statement lists every code in every object the node writes: a result SR, a
revision of it, the document that says a study was not analysed (by a model, by the node)."""

from __future__ import annotations

from datetime import datetime

import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from support.conformance import codes_in, documented_codes
from support.factories import phantom_ct_series

from triage.report import codes as report_codes
from triage.report.revisions import DocumentRef, Revision, not_analysed_fingerprint
from triage.report.sr import build_not_analysed_sr, build_triage_sr
from triage.results import ModelResult, Priority

HEADERS = phantom_ct_series(
    "test_conformance",
    shape=(32, 32, 5),
    study_instance_uid="1.2.3.4",
    series_instance_uid="1.2.3.4.5",
)


def _result(p: float, priority: Priority, **lesion: object) -> ModelResult:
    return ModelResult(
        "ich_classifier",
        "1.0.0",
        codes.SCT.IntracranialHemorrhage,
        p,
        0.5,
        priority,
        "1.2.3.4.5",
        **lesion,  # type: ignore[arg-type]
    )


def _objects() -> dict[str, Dataset]:
    urgent = build_triage_sr(HEADERS, [_result(0.9, Priority.URGENT)], software_version="t")
    before = DocumentRef(
        "1.2.3.4", urgent.SeriesInstanceUID, urgent.SOPInstanceUID, urgent.SOPClassUID
    )
    later = Revision("ich_classifier", 2, "b" * 64, datetime.now(), before)
    fingerprint = not_analysed_fingerprint("ich_classifier", "1.0.0", "no series")
    return {
        "urgent result": urgent,
        "routine result": build_triage_sr(
            HEADERS, [_result(0.1, Priority.ROUTINE)], software_version="t"
        ),
        "segmentation result": build_triage_sr(
            HEADERS,
            [_result(0.9, Priority.URGENT, lesion_volume_ml=4.2, lesion_centre_lps=(1, 2, 3))],
            software_version="t",
        ),
        "revision": build_triage_sr(
            HEADERS, [_result(0.2, Priority.ROUTINE)], software_version="t", revision=later
        ),
        "not analysed by a model": build_not_analysed_sr(
            HEADERS[0],
            reason="no series matches",
            revision=Revision("ich_classifier", 1, fingerprint, datetime.now()),
            software_version="t",
            model_name="ich_classifier",
            model_version="1.0.0",
            finding=codes.SCT.IntracranialHemorrhage,
            analysed_images=HEADERS,
        ),
        "not analysed by the node": build_not_analysed_sr(
            HEADERS[0],
            reason="no active model",
            revision=Revision("", 1, not_analysed_fingerprint("", "", "x"), datetime.now()),
            software_version="t",
        ),
    }


@pytest.mark.parametrize("kind", list(_objects()))
def test_every_code_in_an_object_the_node_writes_is_in_the_conformance_statement(
    kind: str,
) -> None:
    missing = codes_in(_objects()[kind]) - documented_codes()
    assert not missing, f"codes in the {kind} but not in docs/conformance.md: {sorted(missing)}"


def test_every_code_constant_is_documented() -> None:
    constants = {(c.value, c.scheme_designator) for c in report_codes.ALL}
    assert constants <= documented_codes()
