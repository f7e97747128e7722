"""A PACS that refuses the KOS or the SEG does not hold up the SR: each object of a result is
delivered or dead-lettered on its own, and the outbox shows which."""

from __future__ import annotations

import dataclasses
import io
import threading
from pathlib import Path

import numpy as np
from pydicom.sr.codedict import codes
from support.factories import phantom_ct_series
from support.receivers import open_receiver, stop_later
from support.reporting import record_results

from triage.analysis.evidence import keep_lesion
from triage.app.services import Services
from triage.catalogue import DEAD, DELIVERED, Catalogue
from triage.config import load_settings
from triage.deliver.outbox import deliver_due
from triage.dimse import SUCCESS
from triage.receive.receiver import Receiver
from triage.results import ModelResult, Priority
from triage.store import LocalStore

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
KOS_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"


def test_a_pacs_refusing_kos_and_seg_still_gets_the_sr(
    tmp_path: Path, stopper: list[threading.Thread]
) -> None:
    pacs = open_receiver(tmp_path / "pacs", accepted=(CT_CLASS, SR_CLASS))  # no KOS, no SEG
    settings = load_settings(
        {
            "TRIAGE_HOME": str(tmp_path / "home"),
            "TRIAGE_PACS": f"TRIAGE@127.0.0.1:{pacs.port}",
            "TRIAGE_DELIVERY_MAX_TRIES": "1",
        }
    )
    svc = Services(settings, LocalStore(settings.store_path), Catalogue(settings.database_url))
    images = phantom_ct_series("refused-companions", shape=(16, 16, 4))
    receiver = Receiver(svc.store, svc.catalogue, "TRIAGE")
    for ds in images:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        assert receiver.accept(buffer.getvalue()) == SUCCESS
    study = str(images[0].StudyInstanceUID)
    mask = np.zeros((16, 16, 4), dtype=bool)
    mask[4:8, 4:8, 1:3] = True
    first = np.asarray([float(v) for v in images[0].ImagePositionPatient])
    step = np.asarray([float(v) for v in images[1].ImagePositionPatient]) - first
    dy, dx = (float(v) for v in images[0].PixelSpacing)
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2], affine[:3, 3] = (
        [dx, 0, 0],
        [0, dy, 0],
        step,
        first,
    )
    centre = tuple(float(v) for v in (affine @ [6, 6, 1.5, 1])[:3])
    result = ModelResult(
        "ich-segmenter",
        "1.0.0",
        codes.SCT.IntracranialHemorrhage,
        0.95,
        0.5,
        Priority.URGENT,
        str(images[0].SeriesInstanceUID),
        lesion_volume_ml=0.2,
        lesion_centre_lps=centre,
    )
    result = dataclasses.replace(
        result,
        key_point_lps=centre,
        lesion_mask_key=keep_lesion(svc.store, study, "ich-segmenter", mask, affine),
    )
    sr_uid = record_results(svc, study, [result])
    try:
        rows = svc.catalogue.deliveries()
        assert len(rows) == 3  # the SR, its KOS and its SEG: each a row of its own
        summary = deliver_due(svc.store, svc.catalogue, svc.settings)
        assert (summary.delivered, summary.dead) == (1, 2)
        state = {r.sop_instance_uid: r for r in svc.catalogue.deliveries()}
        assert state[sr_uid].state == DELIVERED
        refused = [r for uid, r in state.items() if uid != sr_uid]
        assert {r.state for r in refused} == {DEAD}
        assert all(r.last_error for r in refused)
        assert pacs.catalogue.has_instance(sr_uid)
        assert (svc.catalogue.worklist()[0].delivery, svc.catalogue.worklist()[0].priority) == (
            DEAD,
            "urgent",
        )
    finally:
        svc.catalogue.close()
        stop_later(stopper, pacs)
