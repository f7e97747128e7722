"""Small synthetic CT series for tests: one place that knows the ct_series arguments."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    XRayRadiationDoseSRStorage,
    generate_uid,
)

from triage.catalogue import InstanceRecord, SeriesSummary
from triage.imaging.inspect import as_catalogued
from triage.store import instance_key
from triage.synthetic.phantom import head_phantom
from triage.synthetic.series import ct_series

if TYPE_CHECKING:
    from triage.app.services import Services


def phantom_ct_series(
    tag: str,
    seed: int = 0,
    shape: tuple[int, int, int] = (32, 32, 4),
    spacing: tuple[float, float, float] = (7.0, 7.0, 5.0),
    **overrides: Any,
) -> list[Dataset]:
    """A head phantom without lesion as a CT series; UIDs derive from (tag, seed) unless given."""
    phantom = head_phantom(np.random.default_rng(seed), shape, spacing, False)
    return _series(phantom, tag, seed, overrides)


def lesion_ct_series(
    tag: str,
    seed: int = 0,
    shape: tuple[int, int, int] = (48, 48, 12),
    spacing: tuple[float, float, float] = (4.0, 4.0, 5.0),
    lesion_radius_mm: float = 12.0,
    **overrides: Any,
) -> tuple[Any, list[Dataset]]:
    """A head phantom with a lesion (a `triage.synthetic.phantom.Phantom`: it knows where, in
    ``lesion`` and ``lesion_mask``) and its CT series; slice k of the series is
    ``phantom.hu[:, :, k]``, its pixel (row j, column i) is voxel (i, j, k), and
    ``phantom.affine_lps`` places both."""
    phantom = head_phantom(
        np.random.default_rng(seed), shape, spacing, True, lesion_radius_mm=lesion_radius_mm
    )
    return phantom, _series(phantom, tag, seed, overrides)


def _series(phantom: Any, tag: str, seed: int, overrides: dict[str, Any]) -> list[Dataset]:
    attrs: dict[str, Any] = {
        "study_instance_uid": generate_uid(entropy_srcs=[tag, "study", str(seed)]),
        "series_instance_uid": generate_uid(entropy_srcs=[tag, "series", str(seed)]),
        "patient_id": f"PID{seed}",
        "patient_name": "Phantom^Head",
        "accession_number": f"ACC{seed}",
        "study_description": "CT head",
        "series_description": "Head 5mm",
        "series_number": 2,
        "study_date": "20240517",
        "study_time": "120000",
        **overrides,
    }
    return ct_series(phantom.hu, phantom.spacing, **attrs)


def todays_ct_study(tag: str, slices: int = 4, **overrides: Any) -> list[Dataset]:
    """A small CT study dated now (what a PACS query for new studies finds)."""
    now = datetime.now()
    return phantom_ct_series(
        tag,
        shape=(24, 24, slices),
        study_date=now.strftime("%Y%m%d"),
        study_time=now.strftime("%H%M%S"),
        **overrides,
    )


def vendor_ct_series(
    study_uid: str,
    number: int,
    description: str,
    kernel: str | Sequence[str],
    *,
    manufacturer: str,
    thickness: float = 5.0,
    slices: int = 20,
    **overrides: Any,
) -> list[Dataset]:
    """A small axial head CT series of ``study_uid`` named as a scanner names its own: its
    description, reconstruction kernel, slice thickness (also the slice step) and maker."""
    return phantom_ct_series(
        f"{study_uid}-{number}",
        number,
        (8, 8, slices),
        (25.0, 25.0, thickness),
        study_instance_uid=study_uid,
        series_instance_uid=generate_uid(entropy_srcs=[study_uid, "series", str(number)]),
        series_description=description,
        series_number=number,
        convolution_kernel=kernel,
        manufacturer=manufacturer,
        **overrides,
    )


def vendor_localizer(study_uid: str, number: int, description: str, manufacturer: str) -> Dataset:
    """The scout of a study (ImageType ORIGINAL/PRIMARY/LOCALIZER), as the scanner names it."""
    (ds,) = vendor_ct_series(
        study_uid,
        number,
        description,
        "",
        manufacturer=manufacturer,
        slices=1,
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
    )
    return ds


def secondary_capture(
    study_uid: str,
    number: int,
    description: str,
    *,
    manufacturer: str,
    image_type: Sequence[str] = ("DERIVED", "SECONDARY"),
    images: int = 1,
) -> list[Dataset]:
    """Screen captures stored as Secondary Capture with Modality CT, as scanners store their
    dose screens and exam summaries: pixels, a CT modality, and no CT image geometry."""
    datasets = vendor_ct_series(
        study_uid, number, description, "", manufacturer=manufacturer, slices=images
    )
    for ds in datasets:
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        ds.ImageType = list(image_type)
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "ConvolutionKernel"):
            delattr(ds, keyword)
    return datasets


def dose_report(study_uid: str, number: int = 997, modality: str = "SR") -> Dataset:
    """A CT radiation dose report header (X-Ray Radiation Dose SR, no pixel data)."""
    sop_uid = generate_uid(entropy_srcs=[study_uid, "dose report", str(number)])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = XRayRadiationDoseSRStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = XRayRadiationDoseSRStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[study_uid, "series", str(number)])
    ds.SeriesNumber = number
    ds.SeriesDescription = "Dose Report"
    ds.Modality = modality
    ds.PatientID = "PID-dose"
    return ds


def catalogued_series(datasets: Sequence[Dataset]) -> list[SeriesSummary]:
    """The series of these instances as a node's catalogue holds them (what selection reads),
    in the order their first instances come; keys are the SOP Instance UIDs."""
    groups: dict[str, list[Dataset]] = {}
    for ds in datasets:
        groups.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    out = []
    for members in groups.values():
        summary, refused = as_catalogued(members, [str(ds.SOPInstanceUID) for ds in members])
        assert summary is not None, refused
        out.append(summary)
    return out


def series_summary(
    number: str = "2",
    images: int = 30,
    *,
    description: str = "Head 5mm",
    kernel: str = "STANDARD",
    thickness: float | None = 5.0,
    agent: str = "",
    sop_classes: tuple[str, ...] = (CTImageStorage,),
    modality: str = "CT",
    body_part: str = "HEAD",
    image_types: tuple[str, ...] = ("ORIGINAL\\PRIMARY\\AXIAL",),
    frames: int | None = None,
) -> SeriesSummary:
    """A series as the catalogue summarises it, without any instance behind it (for rules)."""
    return SeriesSummary(
        series_instance_uid=f"1.2.3.{number}",
        modality=modality,
        body_part=body_part,
        series_description=description,
        series_number=number,
        image_types=image_types,
        keys=tuple(f"raw/s/{number}/{n}.dcm" for n in range(images)),
        sop_classes=sop_classes,
        convolution_kernel=kernel,
        slice_thickness=thickness,
        contrast_agent=agent,
        frames=frames,
    )


def store_head_ct(svc: Services, series: Sequence[Dataset]) -> str:
    """The series stored in the node's store and catalogued as an axial head CT, as the
    receiver would have done; its StudyInstanceUID."""
    for ds in series:
        key = instance_key(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        svc.store.put(key, buffer.getvalue())
        svc.catalogue.record_instance(
            InstanceRecord(
                study_instance_uid=ds.StudyInstanceUID,
                series_instance_uid=ds.SeriesInstanceUID,
                sop_instance_uid=ds.SOPInstanceUID,
                sop_class_uid=ds.SOPClassUID,
                transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                key=key,
                size=len(buffer.getvalue()),
                modality="CT",
                image_type="ORIGINAL\\PRIMARY\\AXIAL",
                body_part="HEAD",
                series_description="Head",
            )
        )
    return str(series[0].StudyInstanceUID)
