"""What the receiver accepts: storage SOP classes, their transfer syntaxes, and which of them the
node analyses.

A PACS or router forwards whole studies: beside the CT or MR images come secondary captures
(exam summaries, dose screens), dose reports (RDSR), presentation states, SRs and key object
selections, and this node's own SRs coming back. A forward that fails for one of them is
retried, alarmed on or switched off, so the receiver accepts every standard storage SOP class
by default (``TRIAGE_ACCEPT_SOP_CLASSES``) and keeps what arrives as it arrived. Only the CT and
MR image classes (``ANALYSED_CLASSES``) are what the models analyse; everything else is stored
and catalogued beside them and never re-opens a triaged study.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from pydicom.uid import (
    UID,
    CTImageStorage,
    EnhancedCTImageStorage,
    EnhancedMRImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
    LegacyConvertedEnhancedMRImageStorage,
    MRImageStorage,
)
from pynetdicom import sop_class
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.service_class import ServiceClass, StorageServiceClass

log = logging.getLogger(__name__)

VERIFICATION = "1.2.840.10008.1.1"

# The image classes the models analyse (volumes are assembled from these only)
ANALYSED_CLASSES: tuple[str, ...] = (
    CTImageStorage,
    EnhancedCTImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
    MRImageStorage,
    EnhancedMRImageStorage,
    LegacyConvertedEnhancedMRImageStorage,
)

# Every standard storage SOP class (PS3.4 B.5), as pynetdicom lists them
STORAGE_CLASSES: tuple[str, ...] = tuple(
    str(cx.abstract_syntax) for cx in AllStoragePresentationContexts
)

KEYWORDS: dict[str, str] = {  # keyword -> UID; pynetdicom's names, which include a few typos
    name: str(uid)
    for name, uid in vars(sop_class).items()
    if isinstance(uid, str) and str(uid) in STORAGE_CLASSES
}
_NAMES = {uid: name for name, uid in KEYWORDS.items()}

# Storage classes with pixel data whose keyword does not say "Image"
_PIXEL_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.6.2",  # Enhanced US Volume
    "1.2.840.10008.5.1.4.1.1.30",  # Parametric Map
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.66.7",  # Label Map Segmentation
    "1.2.840.10008.5.1.4.1.1.66.8",  # Height Map Segmentation
    "1.2.840.10008.5.1.4.1.1.77.1.5.8",  # Ophthalmic OCT B-scan Volume Analysis
    "1.2.840.10008.5.1.4.1.1.81.1",  # Ophthalmic Thickness Map
    "1.2.840.10008.5.1.4.1.1.82.1",  # Corneal Topography Map
    "1.2.840.10008.5.1.4.1.1.481.2",  # RT Dose
}
IMAGE_CLASSES: tuple[str, ...] = tuple(
    uid for uid in STORAGE_CLASSES if "Image" in _NAMES[uid] or uid in _PIXEL_CLASSES
)

# Image classes: what pydicom with the pylibjpeg plugins can decode. Video (MPEG, HEVC), JPIP,
# JPEG XL and HTJ2K are not offered; a sender transcodes to one of these or fails.
IMAGE_TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old scanners)
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (12-bit)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
)
# Everything else (SRs, presentation states, KOS, documents, waveforms): stored, never decoded
DOCUMENT_TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
)

# C-GET: the classes a CT or MR study commonly holds come first (at most 127 fit)
_USUAL_IN_A_STUDY = (
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.1",
    "1.2.840.10008.5.1.4.1.1.7.2",
    "1.2.840.10008.5.1.4.1.1.7.3",
    "1.2.840.10008.5.1.4.1.1.7.4",
    "1.2.840.10008.5.1.4.1.1.88.67",  # X-Ray Radiation Dose SR
    "1.2.840.10008.5.1.4.1.1.88.76",  # Enhanced X-Ray Radiation Dose SR
    "1.2.840.10008.5.1.4.1.1.88.73",  # Patient Radiation Dose SR
    "1.2.840.10008.5.1.4.1.1.11.1",  # Grayscale Softcopy Presentation State
    "1.2.840.10008.5.1.4.1.1.11.2",  # Color Softcopy Presentation State
    "1.2.840.10008.5.1.4.1.1.88.59",  # Key Object Selection
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR (this node's results among them)
    "1.2.840.10008.5.1.4.1.1.88.35",  # Extensible SR
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.66",  # Raw Data
    "1.2.840.10008.5.1.4.1.1.66.1",  # Spatial Registration
    "1.2.840.10008.5.1.4.1.1.4.2",  # MR Spectroscopy
)
MAX_RETRIEVE_CONTEXTS = 127  # 128 presentation contexts per association, one for C-GET


def is_analysed(sop_class_uid: str) -> bool:
    """An image of a kind the models analyse: a new one re-opens a triaged study."""
    return sop_class_uid in ANALYSED_CLASSES


def name_of(sop_class_uid: str) -> str:
    """The SOP class in words (its keyword), or the UID when it is not a standard one."""
    return _NAMES.get(sop_class_uid) or UID(sop_class_uid).keyword or sop_class_uid


def transfer_syntaxes_for(sop_class_uid: str) -> tuple[str, ...]:
    """The transfer syntaxes accepted for a SOP class.

    Image classes (and private ones, which may hold pixels) get every syntax the node decodes;
    other standard classes the uncompressed ones, which is what senders use for them.
    """
    if sop_class_uid in STORAGE_CLASSES and sop_class_uid not in IMAGE_CLASSES:
        return DOCUMENT_TRANSFER_SYNTAXES
    return IMAGE_TRANSFER_SYNTAXES


def register_storage(sop_class_uids: Iterable[str]) -> None:
    """Make pynetdicom store the classes it does not know (private or retired ones named in
    TRIAGE_ACCEPT_SOP_CLASSES): without this it accepts their presentation context but
    answers every C-STORE of them with a failure."""
    for uid in sop_class_uids:
        if sop_class.uid_to_service_class(uid) is ServiceClass:
            keyword = UID(uid).keyword or "PrivateStorage_" + uid.replace(".", "_")
            sop_class.register_uid(uid, keyword, StorageServiceClass)


def accepted_classes(setting: Iterable[str]) -> tuple[str, ...]:
    """The SOP class UIDs named by TRIAGE_ACCEPT_SOP_CLASSES (as parsed by triage.config):
    ``storage`` (every standard storage class), ``images`` (the image storage classes) and
    UIDs, in that order and without repeats."""
    out: dict[str, None] = {}
    for item in setting:
        group = {"storage": STORAGE_CLASSES, "images": IMAGE_CLASSES}.get(item, (item,))
        out.update(dict.fromkeys(group))
    if not set(out) & set(ANALYSED_CLASSES):
        log.warning(
            "TRIAGE_ACCEPT_SOP_CLASSES accepts none of the CT and MR image classes the models "
            "analyse: nothing received will be triaged"
        )
    return tuple(out)


def retrieve_contexts(accepted: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
    """What a C-GET proposes (with the SCP role) for the instances it brings back: the
    accepted classes, analysed ones first, then those a study usually holds, then the rest,
    at most ``MAX_RETRIEVE_CONTEXTS``."""
    register_storage(accepted)
    rank = {uid: i for i, uid in enumerate((*ANALYSED_CLASSES, *_USUAL_IN_A_STUDY))}
    ordered = sorted(accepted, key=lambda uid: rank.get(uid, len(rank)))  # stable: PS3.4 order
    return [(uid, transfer_syntaxes_for(uid)) for uid in ordered[:MAX_RETRIEVE_CONTEXTS]]
