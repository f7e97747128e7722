"""The conformance statement lists every code in every object the node writes: a result SR, a
revision of it, the document that says a study was not analysed (by a model, by the node), and
the key object selection and segmentation of a positive finding."""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from support.conformance import codes_in, documented_codes
from support.factories import lesion_ct_series, phantom_ct_series

from triage.analysis.evidence import keep_lesion
from triage.report import codes as report_codes
from triage.report.companions import companions, key_images_of
from triage.report.revisions import DocumentRef, Revision, not_analysed_fingerprint
from triage.report.sr import build_not_analysed_sr, build_triage_sr
from triage.results import ModelResult, Priority
from triage.store import LocalStore

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


def _companions() -> dict[str, Dataset]:
    """The KOS and SEG of a segmentation model's positive finding, made as the pipeline makes
    them (`triage.report.companions`)."""
    phantom, headers = lesion_ct_series("test_conformance_companions", shape=(32, 32, 8))
    series = str(headers[0].SeriesInstanceUID)
    study = str(headers[0].StudyInstanceUID)
    centre = tuple(float(v) for v in headers[4].ImagePositionPatient)
    with tempfile.TemporaryDirectory() as folder:
        store = LocalStore(Path(folder))
        key = keep_lesion(store, study, "seg", phantom.lesion_mask, phantom.affine_lps)
        result = ModelResult(
            "seg",
            "1.0.0",
            codes.SCT.IntracranialHemorrhage,
            0.9,
            0.5,
            Priority.URGENT,
            series,
            lesion_volume_ml=2.0,
            lesion_centre_lps=centre,  # type: ignore[arg-type]
            key_point_lps=centre,  # type: ignore[arg-type]
            lesion_mask_key=key,
        )
        revision = Revision("seg", 1, "c" * 64, datetime.now())
        made = companions(
            store,
            study,
            result,
            headers,
            key_images_of(result, headers),
            revision,
            software_version="t",
        )
    assert set(made) == {"kos", "seg"}
    return {"key object selection": made["kos"], "segmentation": made["seg"]}


def _objects() -> dict[str, Dataset]:
    urgent = build_triage_sr(HEADERS, [_result(0.9, Priority.URGENT)], software_version="t")
    before = DocumentRef(
        "1.2.3.4", urgent.SeriesInstanceUID, urgent.SOPInstanceUID, urgent.SOPClassUID
    )
    later = Revision("ich_classifier", 2, "b" * 64, datetime.now(), before)
    fingerprint = not_analysed_fingerprint("ich_classifier", "1.0.0", "no series")
    return {
        "urgent result": urgent,
        "uncertain result": build_triage_sr(
            HEADERS,
            [_result(0.97, Priority.ROUTINE, ood_score=19.6, ood_threshold=8.1)],
            software_version="t",
        ),
        "result like the training data": build_triage_sr(
            HEADERS,
            [_result(0.9, Priority.URGENT, ood_score=3.2, ood_threshold=8.1)],
            software_version="t",
        ),
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
        **_companions(),
    }


@pytest.mark.parametrize("kind", list(_objects()))
def test_every_code_in_an_object_the_node_writes_is_in_the_conformance_statement(
    kind: str,
) -> None:
    missing = codes_in(_objects()[kind]) - documented_codes()
    assert not missing, f"codes in the {kind} but not in docs/conformance.md: {sorted(missing)}"


def test_every_code_constant_is_documented() -> None:
    constants = {(c.value, c.scheme_designator) for c in (*report_codes.ALL, *report_codes.LOCAL)}
    assert constants <= documented_codes()
