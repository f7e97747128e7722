"""Synthetic CT series: turn a HU volume (e.g. a phantom) into real CT Image Storage instances.

Used by tests, demos and benchmarks in place of patient data. The output is a complete CT Image
IOD that ``dciodvfy`` accepts: signed 16-bit pixels holding HU directly (RescaleSlope 1,
RescaleIntercept 0), explicit VR little endian, and UIDs that derive deterministically from the
inputs so the same call always produces the same instances.

The volume convention is the project's: ``hu[i, j, k]`` = [column, row, slice]; slice ``k`` is
stored as one instance whose pixel array (Rows, Columns) is ``hu[:, :, k].T``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    PYDICOM_ROOT_UID,
    UID,
    ExplicitVRLittleEndian,
)
from pydicom.uid import generate_uid as _generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
HU_MIN = -1024
HU_MAX = 3071
MANUFACTURER = "triage synthetic"


def ct_series(
    hu: np.ndarray,
    spacing: Sequence[float],
    *,
    study_instance_uid: str,
    series_instance_uid: str,
    patient_id: str,
    patient_name: str,
    accession_number: str,
    study_description: str,
    series_description: str,
    series_number: int,
    study_date: str,
    study_time: str,
    body_part: str = "HEAD",
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    origin: Sequence[float] | None = None,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    instance_uid_prefix: str | None = None,
    frame_of_reference_uid: str | None = None,
    convolution_kernel: str | Sequence[str] = "STANDARD",
    slice_thickness: float | None = None,
    contrast_agent: str | None = None,
    manufacturer: str = MANUFACTURER,
) -> list[Dataset]:
    """One CT instance per slice of ``hu`` (columns, rows, slices), in slice order.

    ``spacing`` is (column spacing, row spacing, slice step) in mm; ``orientation`` is
    ImageOrientationPatient (row direction, then column direction); slices step along their
    cross product. ``origin`` is the ImagePositionPatient of the first slice; by default the
    volume is centred on the patient origin. The frame of reference derives from the study, so
    a localizer made for the same study shares it.

    ``convolution_kernel`` (one value, or several as Siemens writes "Hr38\\3"),
    ``slice_thickness`` (default: the slice step), ``contrast_agent`` (ContrastBolusAgent; none
    by default) and ``manufacturer`` let a series be named as a given scanner names its own,
    for the series selection rules.
    """
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"hu must be a 3D array (columns, rows, slices), got shape {hu.shape}")
    sx, sy, sz = (float(s) for s in spacing)
    row_dir, col_dir, normal = _directions(orientation)
    shape = np.asarray(hu.shape, dtype=float)
    if origin is None:
        first = -((shape[0] - 1) * sx * row_dir + (shape[1] - 1) * sy * col_dir) / 2.0
        first = first - (shape[2] - 1) * sz * normal / 2.0
    else:
        first = np.asarray(origin, dtype=float)
    prefix = instance_uid_prefix or PYDICOM_ROOT_UID
    frame_uid = frame_of_reference_uid or _uid(prefix, study_instance_uid, "frame-of-reference")
    pixels = np.clip(np.rint(hu), HU_MIN, HU_MAX).astype(np.int16)

    datasets = []
    for k in range(hu.shape[2]):
        position = first + k * sz * normal
        ds = _image_dataset(
            sop_instance_uid=_uid(prefix, series_instance_uid, "instance", str(k + 1)),
            study_instance_uid=study_instance_uid,
            series_instance_uid=series_instance_uid,
            frame_of_reference_uid=frame_uid,
            patient_id=patient_id,
            patient_name=patient_name,
            accession_number=accession_number,
            study_description=study_description,
            series_description=series_description,
            series_number=series_number,
            study_date=study_date,
            study_time=study_time,
            body_part=body_part,
            image_type=image_type,
        )
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds_number(x) for x in position]
        ds.ImageOrientationPatient = [_ds_number(x) for x in (*row_dir, *col_dir)]
        ds.PixelSpacing = [_ds_number(sy), _ds_number(sx)]
        ds.SliceThickness = _ds_number(abs(sz) if slice_thickness is None else slice_thickness)
        ds.SpacingBetweenSlices = _ds_number(abs(sz))
        ds.ConvolutionKernel = (
            convolution_kernel if isinstance(convolution_kernel, str) else list(convolution_kernel)
        )
        ds.Manufacturer = manufacturer
        if contrast_agent is not None:
            ds.ContrastBolusAgent = contrast_agent
        ds.SliceLocation = _ds_number(float(np.dot(position, normal)))
        ds.WindowCenter = "40"
        ds.WindowWidth = "80"
        _set_pixels(ds, np.ascontiguousarray(pixels[:, :, k].T))
        datasets.append(ds)
    return datasets


def localizer(
    hu: np.ndarray,
    spacing: Sequence[float],
    *,
    study_instance_uid: str,
    series_instance_uid: str,
    patient_id: str,
    patient_name: str,
    accession_number: str,
    study_description: str,
    study_date: str,
    study_time: str,
    series_description: str = "Scout",
    series_number: int = 1,
    body_part: str = "HEAD",
    instance_uid_prefix: str | None = None,
) -> Dataset:
    """A single lateral scout image (ImageType ORIGINAL/PRIMARY/LOCALIZER) of the same study.

    The image is the mean HU through the head from right to left: a stand-in for the projection
    radiograph a scanner acquires before the axial series, so series selection has something
    realistic to exclude.
    """
    hu = np.asarray(hu, dtype=np.float32)
    if hu.ndim != 3:
        raise ValueError(f"hu must be a 3D array (columns, rows, slices), got shape {hu.shape}")
    sx, sy, sz = (float(s) for s in spacing)
    projection = hu.mean(axis=0)  # (rows of the volume = A->P, slices = I->S)
    image = projection.T[::-1, :]  # rows: superior -> inferior; columns: anterior -> posterior
    ny, nz = projection.shape
    top = np.array([0.0, -(ny - 1) * sy / 2.0, (nz - 1) * sz / 2.0])
    prefix = instance_uid_prefix or PYDICOM_ROOT_UID
    ds = _image_dataset(
        sop_instance_uid=_uid(prefix, series_instance_uid, "instance", "1"),
        study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid,
        frame_of_reference_uid=_uid(prefix, study_instance_uid, "frame-of-reference"),
        patient_id=patient_id,
        patient_name=patient_name,
        accession_number=accession_number,
        study_description=study_description,
        series_description=series_description,
        series_number=series_number,
        study_date=study_date,
        study_time=study_time,
        body_part=body_part,
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
    )
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = [_ds_number(x) for x in top]
    ds.ImageOrientationPatient = ["0", "1", "0", "0", "0", "-1"]
    ds.PixelSpacing = [_ds_number(sz), _ds_number(sy)]
    ds.SliceThickness = _ds_number(sx * hu.shape[0])
    del ds.RescaleType  # a projection's values are not HU (dciodvfy warns otherwise)
    ds.WindowCenter = "-500"
    ds.WindowWidth = "1000"
    _set_pixels(ds, np.clip(np.rint(image), HU_MIN, HU_MAX).astype(np.int16))
    return ds


def write_series(datasets: Sequence[Dataset], folder: Path | str) -> list[Path]:
    """Write each instance as a DICOM Part 10 file named by its SOPInstanceUID; return the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_study(
    folder: Path | str,
    hu: np.ndarray,
    spacing: Sequence[float],
    *,
    scout_series_uid: str,
    series_instance_uid: str,
    series_description: str,
    **study: str,
) -> list[Path]:
    """A scout and an axial series of one study (as a scanner sends it), written to folder.

    ``study`` holds the attributes both series share: study_instance_uid, patient_id,
    patient_name, accession_number, study_description, study_date, study_time.
    """
    paths = write_series(
        [localizer(hu, spacing, series_instance_uid=scout_series_uid, **study)],  # type: ignore[arg-type]
        folder,
    )
    axial = ct_series(
        hu,
        spacing,
        series_instance_uid=series_instance_uid,
        series_description=series_description,
        series_number=2,
        **study,  # type: ignore[arg-type]
    )
    return paths + write_series(axial, folder)


def _uid(prefix: str, *parts: str) -> str:
    return _generate_uid(prefix=prefix, entropy_srcs=["triage.synthetic.series", *parts])


def _ds_number(value: float) -> str:
    """A DS value of at most 16 characters."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    return text[:16]


def _directions(orientation: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    iop = np.asarray(orientation, dtype=float)
    if iop.shape != (6,):
        raise ValueError(f"orientation must be 6 numbers (ImageOrientationPatient), got {iop}")
    row_dir = iop[:3] / np.linalg.norm(iop[:3])
    col_dir = iop[3:] / np.linalg.norm(iop[3:])
    if abs(float(np.dot(row_dir, col_dir))) > 1e-4:
        raise ValueError(f"orientation rows and columns must be orthogonal, got {list(iop)}")
    return row_dir, col_dir, np.cross(row_dir, col_dir)


def _image_dataset(
    *,
    sop_instance_uid: str,
    study_instance_uid: str,
    series_instance_uid: str,
    frame_of_reference_uid: str,
    patient_id: str,
    patient_name: str,
    accession_number: str,
    study_description: str,
    series_description: str,
    series_number: int,
    study_date: str,
    study_time: str,
    body_part: str,
    image_type: Sequence[str],
) -> Dataset:
    """Every CT Image IOD module except the per-image plane and pixel values."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(CT_IMAGE_STORAGE)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "TRIAGE_SYNTH"

    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceCreationDate = study_date
    ds.InstanceCreationTime = study_time
    # Patient
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    # General Study
    ds.StudyInstanceUID = study_instance_uid
    ds.StudyDate = study_date
    ds.StudyTime = study_time
    ds.ReferringPhysicianName = ""
    ds.StudyID = accession_number[:16] or "1"
    ds.AccessionNumber = accession_number
    ds.StudyDescription = study_description
    # General Series
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series_instance_uid
    ds.SeriesNumber = int(series_number)
    ds.SeriesDescription = series_description
    ds.SeriesDate = study_date
    ds.SeriesTime = study_time
    ds.BodyPartExamined = body_part
    ds.PatientPosition = "HFS"
    # Frame of Reference
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    # General Equipment
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = "head phantom"
    ds.SoftwareVersions = "1"
    # General Acquisition / General Image
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate = study_date
    ds.AcquisitionTime = study_time
    ds.ContentDate = study_date
    ds.ContentTime = study_time
    ds.ImageType = list(image_type)
    ds.BurnedInAnnotation = "NO"
    # CT Image
    ds.KVP = "120"
    ds.XRayTubeCurrent = 250
    ds.ExposureTime = 1000
    ds.ConvolutionKernel = "STANDARD"
    ds.GantryDetectorTilt = "0"
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    return ds


def _set_pixels(ds: Dataset, pixels: np.ndarray) -> None:
    """Image Pixel module for signed 16-bit monochrome pixels stored as HU."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape)
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.SmallestImagePixelValue = int(pixels.min())
    ds.LargestImagePixelValue = int(pixels.max())
    ds.PixelData = pixels.astype("<i2").tobytes()
