"""A model's input reference: made from studies an engineer gives, or shipped in its bundle.

The registry records it with the version at registration (`triage.analysis.ood` says what it
holds and how each input is scored against it). Where it comes from, first found first:

1. ``triage models register BUNDLE --reference DIR``: DIR holds one folder per study like those
   the model is meant for (normal and abnormal, from the scanners of the site); each study's
   series is chosen by the model's own series rule, assembled and preprocessed as in triage,
   and its statistics make the reference. The studies are read, never stored or sent.
2. ``reference.json`` in the bundle: the statistics of the inputs it was validated on, written
   by whoever trained it (the shipped bundles: ``models/make_reference.py``).
3. None: the version runs without the check, and `triage models show` and every result say so.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from triage.analysis.model import TriageModel
from triage.analysis.ood import Reference, input_statistics
from triage.errors import ModelError
from triage.imaging.volume import AssemblyOptions
from triage.modelops.evaluation import study_input

log = logging.getLogger(__name__)

#: the file in a bundle's folder that holds its reference
REFERENCE_FILE = "reference.json"


def bundle_reference(folder: Path) -> Reference | None:
    """The reference a bundle ships (``reference.json``), or None when it ships none."""
    path = Path(folder) / REFERENCE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is not readable JSON: {exc}") from exc
    return Reference.from_dict(data)


def reference_from_studies(
    model: TriageModel,
    folder: Path,
    device: torch.device,
    options: AssemblyOptions | None = None,
) -> Reference:
    """The reference of the studies in ``folder`` (one sub-folder per study; a folder of files
    is one study), as the model would see them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"--reference {folder}: not a folder of studies")
    studies = sorted(p for p in folder.iterdir() if p.is_dir()) or [folder]
    options = options or AssemblyOptions()
    rows: list[np.ndarray] = []
    skipped: list[str] = []
    for study in studies:
        made, reason = study_input(model, study, device, options)
        if made is None:
            skipped.append(f"{study.name}: {reason}")
            continue
        rows.append(input_statistics(made[0], model.input.pixdim))
    for line in skipped:
        log.info("reference for %s: left out %s", model.name, line)
    if not rows:
        raise ModelError(
            f"--reference {folder}: none of its {len(studies)} studies has a series "
            f"{model.name} would analyse ({'; '.join(skipped[:3])})"
        )
    return Reference.fit(rows, source=f"{len(rows)} studies from {folder}")


def registration_reference(
    model: TriageModel, bundle_folder: Path, studies: Path | None, device: torch.device
) -> Reference | None:
    """The reference the registry records for a new version: from ``studies`` when given,
    else the bundle's own; None (said in the log) when there is neither."""
    ref = (
        reference_from_studies(model, studies, device)
        if studies is not None
        else bundle_reference(bundle_folder)
    )
    if ref is None:
        log.warning(
            "model %s has no input reference: it runs without the out-of-distribution check "
            "(register it with --reference DIR, a folder of studies it is meant for)",
            model.name,
        )
    else:
        log.info(
            "model %s: input reference of %d studies (%s), OOD threshold %.2f",
            model.name,
            ref.studies,
            ref.source,
            ref.threshold,
        )
    return ref
