"""What the pipeline sees in a set of DICOM files: series, their volumes, or why they are none.

`triage inspect` prints this; the geometry reported is the pipeline's own (the same planning
and assembly code), so what a user reads is what a model gets.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, ImplicitVRLittleEndian

from triage.attributes import readable_text
from triage.catalogue import InstanceRecord, SeriesSummary
from triage.errors import NotAVolumeError
from triage.imaging.decode import stored_values, transfer_syntax
from triage.imaging.volume import (
    DEFAULT_OPTIONS,
    AssemblyOptions,
    Geometry,
    load_stack,
    plan_series,
)
from triage.receive.receiver import Rejected, describe_instance

#: Values larger than this stay in the file until used (pixel data): a big folder fits in memory
DEFER_SIZE = "16 KB"


@dataclass
class SeriesReport:
    """One series as `triage inspect` reports it (see ``as_dict`` for the JSON form)."""

    series_instance_uid: str
    series_number: str
    modality: str
    body_part_examined: str
    series_description: str
    image_type: list[str]
    sop_classes: list[str]
    transfer_syntaxes: list[str]
    instances: int
    frames: int
    volume: Geometry | None = None
    time_points: list[Geometry] = field(default_factory=list)
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)
    #: the series as the catalogue would hold it, what series selection reads (None when the
    #: receiver would refuse every instance: ``refused`` says why)
    summary: SeriesSummary | None = None
    refused: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "series_instance_uid": self.series_instance_uid,
            "series_number": self.series_number,
            "modality": self.modality,
            "body_part_examined": self.body_part_examined,
            "series_description": self.series_description,
            "image_type": self.image_type,
            "sop_classes": self.sop_classes,
            "transfer_syntaxes": self.transfer_syntaxes,
            "instances": self.instances,
            "frames": self.frames,
            "volume": self.volume.as_dict() if self.volume else None,
            "time_points": [g.as_dict() for g in self.time_points],
            "reason": self.reason,
            "warnings": self.warnings,
            "convolution_kernel": self.summary.convolution_kernel if self.summary else "",
            "slice_thickness": self.summary.slice_thickness if self.summary else None,
            "contrast_agent": self.summary.contrast_agent if self.summary else "",
            "refused": self.refused,
        }


@dataclass(frozen=True)
class Unreadable:
    """A file that is not a DICOM image of any series, and why."""

    path: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass
class Inspection:
    series: list[SeriesReport]
    unreadable: list[Unreadable]

    def as_dict(self) -> dict[str, Any]:
        return {
            "series": [s.as_dict() for s in self.series],
            "unreadable": [u.as_dict() for u in self.unreadable],
        }


def _name(uid: str) -> str:
    return UID(uid).name if uid else "unknown"


def inspect_series(
    datasets: Sequence[Dataset],
    names: Sequence[str],
    options: AssemblyOptions = DEFAULT_OPTIONS,
) -> SeriesReport:
    """Plan and assemble one series exactly as the pipeline does, and describe the outcome."""
    first = datasets[0]
    image_type = first.get("ImageType") or []
    report = SeriesReport(
        series_instance_uid=readable_text(first, "SeriesInstanceUID"),
        series_number=readable_text(first, "SeriesNumber"),
        modality=readable_text(first, "Modality"),
        body_part_examined=readable_text(first, "BodyPartExamined"),
        series_description=readable_text(first, "SeriesDescription"),
        image_type=[str(v) for v in image_type]
        if not isinstance(image_type, str)
        else [image_type],
        sop_classes=sorted({_name(readable_text(ds, "SOPClassUID")) for ds in datasets}),
        transfer_syntaxes=sorted({_name(transfer_syntax(ds)) for ds in datasets}),
        instances=len(datasets),
        frames=sum(int(readable_text(ds, "NumberOfFrames") or 1) for ds in datasets),
    )
    report.summary, report.refused = as_catalogued(datasets, names)
    try:
        stacks = plan_series(datasets, options, names)
        volumes = [load_stack(stack, report.series_instance_uid, options) for stack in stacks]
    except NotAVolumeError as exc:
        report.reason = str(exc)
        report.warnings = _undecodable(datasets, names)
        return report
    report.warnings = list(volumes[0].warnings)
    if len(volumes) == 1:
        report.volume = volumes[0].geometry
    else:
        report.reason = (
            f"4D (time) series: {len(volumes)} time points of {volumes[0].array.shape[2]} "
            "slices; each time point is a volume"
        )
        report.time_points = [v.geometry for v in volumes]
    return report


def as_catalogued(
    datasets: Sequence[Dataset], names: Sequence[str]
) -> tuple[SeriesSummary | None, list[str]]:
    """The series as the receiver would catalogue it (keys: ``names``), and why it would refuse
    any of its instances; None when it would refuse them all.

    What `triage inspect` and `triage models evaluate` show of series selection is then what a
    node's selection sees.
    """
    records: list[InstanceRecord] = []
    refused: list[str] = []
    for ds, name in zip(datasets, names, strict=True):
        try:
            record = describe_instance(ds, transfer_syntax(ds) or ImplicitVRLittleEndian, 0)
        except Rejected as exc:
            refused.append(f"{name}: the receiver refuses it (0x{exc.status:04X}): {exc.reason}")
            continue
        records.append(dataclasses.replace(record, key=name))
    return (SeriesSummary.of_records(records) if records else None), refused


def _undecodable(datasets: Sequence[Dataset], names: Sequence[str]) -> list[str]:
    """For a series that is no volume: which of its images could not even be decoded."""
    problems = []
    for ds, name in zip(datasets, names, strict=True):
        if "PixelData" not in ds or int(readable_text(ds, "SamplesPerPixel") or 1) != 1:
            continue
        try:
            stored_values(ds, name)
        except NotAVolumeError as exc:
            problems.append(str(exc))
        except Exception as exc:  # pydicom raises many types on a broken element
            problems.append(f"{name}: pixel data cannot be decoded: {exc}")
    return problems


def _files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            for folder, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    yield Path(folder) / name
        else:
            yield path


def _read(path: Path) -> Dataset | Unreadable:
    try:
        ds = pydicom.dcmread(path, defer_size=DEFER_SIZE)
    except pydicom.errors.InvalidDicomError:
        return Unreadable(str(path), "not a DICOM file (no DICM preamble or meta information)")
    except Exception as exc:
        return Unreadable(str(path), f"cannot be read as DICOM: {exc}")
    if "SeriesInstanceUID" not in ds:
        sop_class = readable_text(ds, "SOPClassUID") or readable_text(
            getattr(ds, "file_meta", Dataset()), "MediaStorageSOPClassUID"
        )
        what = _name(sop_class) if sop_class else "no SOP class"
        return Unreadable(str(path), f"belongs to no series (no SeriesInstanceUID; {what})")
    return ds


def inspect_paths(paths: Sequence[Path], options: AssemblyOptions = DEFAULT_OPTIONS) -> Inspection:
    """Every series in these files and folders (searched recursively)."""
    files = list(_files(paths))
    with ThreadPoolExecutor(max_workers=options.workers) as pool:
        read = list(pool.map(_read, files))
    unreadable = [r for r in read if isinstance(r, Unreadable)]
    grouped: dict[str, list[tuple[Dataset, str]]] = {}
    for path, item in zip(files, read, strict=True):
        if isinstance(item, Dataset):
            grouped.setdefault(str(item.SeriesInstanceUID), []).append((item, str(path)))
    series = [
        inspect_series([ds for ds, _ in members], [n for _, n in members], options)
        for members in grouped.values()
    ]
    return Inspection(series, unreadable)


def inspect_keys(
    load: Callable[[str], bytes],
    series_keys: Sequence[Sequence[str]],
    options: AssemblyOptions = DEFAULT_OPTIONS,
) -> Inspection:
    """Every series of a study in the object store, one series in memory at a time."""
    from triage.imaging.volume import read_instance

    reports, unreadable = [], []
    for keys in series_keys:
        datasets, names = [], []
        for key in keys:
            try:
                datasets.append(read_instance(load(key), key))
                names.append(key)
            except NotAVolumeError as exc:
                unreadable.append(Unreadable(key, str(exc)))
        if datasets:
            reports.append(inspect_series(datasets, names, options))
    return Inspection(reports, unreadable)
