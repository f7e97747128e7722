"""The key image of a study for the clinicians' page: one slice of the analysed series, in a
brain window, with the flagged region outlined (a segmentation) or its centre marked.

The slice is the scanner's own (no voxel is interpolated across slices) through the finding's
key point, shown as radiologists read an axial image: the patient's right on the image's left,
anterior up, derived from the affine. Only the slice shown is decoded when the series makes a
regular stack; the headers of the whole series are read to place it. A picture to find the
finding by, not a diagnostic display: the viewer is where images are read.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from sqlalchemy import select

from triage.analysis.evidence import lesion_of
from triage.catalogue import NOT_ANALYSED, Catalogue, FindingRow, Result, Study, finding_row
from triage.errors import NotAVolumeError
from triage.imaging.decode import stored_values
from triage.imaging.volume import load_stack, plan_series
from triage.results import Role
from triage.store import ObjectStore

CT_WINDOW = (80.0, 40.0)  # width, level in HU: the brain window
MR_PERCENTILES = (1.0, 99.0)  # an MR slice's window: these percentiles of its pixels
OUTLINE_RGB = (255, 255, 0)  # yellow: the segmented lesion's edge
MARKER_RGB = (0, 255, 255)  # cyan: the key point's cross
MAX_SIDE = 2048  # pixels, after evening out unequal pixel spacing


@dataclass(frozen=True)
class KeyImage:
    """The PNG, what it shows in words, and the finding and slice it shows."""

    png: bytes
    caption: str
    finding: FindingRow
    slice_number: int  # 1-based, in the series' order along its slice normal
    slices: int
    marked: str  # what is drawn on it, in words ("" when nothing is)


def key_image(
    store: ObjectStore, catalogue: Catalogue, study_uid: str, *, include_shadow: bool = False
) -> KeyImage | None:
    """The key image of a study's top finding; None when there is nothing to show (no result,
    not analysed, or only shadow results without ``include_shadow``).

    Raises StorageError when an object cannot be read and NotAVolumeError when the series no
    longer makes a volume: the page says why rather than showing another slice.
    """
    state = catalogue.study_state(study_uid)
    if state is None or state[0] == NOT_ANALYSED:
        return None
    finding = key_finding(findings_of(catalogue, study_uid), include_shadow=include_shadow)
    if finding is None:
        return None
    series = next(
        (
            s
            for s in catalogue.series_of(study_uid)
            if s.series_instance_uid == finding.series_instance_uid
        ),
        None,
    )
    if series is None or not series.keys:
        return None
    point = finding.key_point_lps or finding.lesion_centre_lps
    plane = _plane(store, series.keys, point)
    low, high, window = _window(plane.values, series.modality)
    grey = np.clip((plane.values - low) * (255.0 / max(high - low, 1e-6)), 0, 255)
    rgb = np.repeat(grey.astype(np.uint8)[..., None], 3, axis=-1)
    marks = []
    if finding.lesion_mask_key is not None:
        inside = _sampled(*lesion_of(store, finding.lesion_mask_key), plane.pixel_lps)
        outline = inside & ~_eroded(_eroded(inside))  # a band two pixels wide, on the lesion
        rgb[outline] = OUTLINE_RGB
        if outline.any():
            marks.append("outline of the segmented lesion (yellow)")
    marker = None if point is None else plane.in_plane(np.asarray(point, dtype=np.float64))
    if marker is not None:
        _draw_cross(rgb, marker)
        what = "lesion centre" if finding.lesion_mask_key else "most salient point"
        marks.append(f"{what} (cyan cross)")
    marked = " and ".join(marks)
    png = _png(rgb[_view(plane)])
    caption = _caption(finding, plane, marked, window)
    return KeyImage(png, caption, finding, plane.index + 1, plane.count, marked)


def _caption(finding: FindingRow, plane: _Plane, marked: str, window: str) -> str:
    """``model version: finding, p P (threshold T, flagged); slice k of n (image number N);
    marked: ...; window ...; patient's right on the image's left, anterior up``."""
    who = f"{finding.model_name} {finding.model_version}"
    if finding.role == Role.SHADOW:
        who += " (shadow mode: not used for the priority)"
    verdict = "flagged" if finding.probability >= finding.threshold else "not flagged"
    where = f"slice {plane.index + 1} of {plane.count}"
    if plane.image_number is not None:
        where += f" (image number {plane.image_number})"
    if finding.key_point_lps is None and finding.lesion_centre_lps is None:
        where += ", the middle one: no key point recorded"
    return "; ".join(
        (
            f"{who}: {finding.name}, p {finding.probability:.2f} "
            f"(threshold {finding.threshold:.2f}, {verdict})",
            where,
            f"marked: {marked}" if marked else "nothing marked",
            window,
            "patient's right on the image's left, anterior up",
        )
    )


def findings_of(catalogue: Catalogue, study_uid: str) -> list[FindingRow]:
    """Every recorded result of the study, active and shadow."""
    with catalogue.session() as s:
        rows = s.scalars(
            select(Result)
            .join(Study, Study.id == Result.study_id)
            .where(Study.study_instance_uid == study_uid)
        )
        return [finding_row(r) for r in rows]


def key_finding(
    findings: Sequence[FindingRow], *, include_shadow: bool = False
) -> FindingRow | None:
    """The finding a key image shows: a positive one with evidence (a key point or a lesion
    mask) before any other, an active one before a shadow one, then the most probable."""
    shown = [f for f in findings if include_shadow or f.role != Role.SHADOW]

    def rank(f: FindingRow) -> tuple[bool, bool, float]:
        evidence = f.key_point_lps is not None or f.lesion_mask_key is not None
        return (f.probability >= f.threshold and evidence, f.role != Role.SHADOW, f.probability)

    return max(shown, key=rank, default=None)


@dataclass(frozen=True)
class _Plane:
    """One slice of a series: values[i, j] over two voxel axes and where each pixel lies."""

    values: np.ndarray
    origin: np.ndarray  # LPS of pixel (0, 0)
    steps: np.ndarray  # 3x2: LPS step of i (column 0) and of j (column 1)
    normal: np.ndarray  # the LPS step of one slice
    index: int
    count: int
    image_number: int | None

    @property
    def pixel_lps(self) -> np.ndarray:
        grid = np.indices(self.values.shape, dtype=np.float64)
        return (
            self.origin
            + grid[0][..., None] * self.steps[:, 0]
            + grid[1][..., None] * self.steps[:, 1]
        )

    def in_plane(self, point: np.ndarray) -> tuple[float, float] | None:
        """The point's (i, j) on this slice, or None when it lies off the slice or the image."""
        frame = np.column_stack([self.steps, self.normal])
        i, j, k = np.linalg.solve(frame, point - self.origin)
        inside = all(-0.5 <= v <= n - 0.5 for v, n in zip((i, j), self.values.shape, strict=True))
        return (float(i), float(j)) if inside and abs(k) <= 0.5 else None


def _plane(store: ObjectStore, keys: Sequence[str], point: Sequence[float] | None) -> _Plane:
    """The axial slice through the point (else the middle one): only it is decoded when the
    series is a regular stack whose slices are axial; else the whole volume is."""
    with ThreadPoolExecutor(max_workers=4) as pool:  # an S3 store answers each get slowly
        datasets = list(pool.map(lambda key: _header(store.get(key), key), keys))
    stack = plan_series(datasets, names=list(keys))[0]  # a time series: its first time point
    affine = stack.geometry.affine_lps
    axial = int(np.argmax(np.abs(affine[2, :3]) / np.linalg.norm(affine[:3, :3], axis=0)))
    count = stack.geometry.shape[axial]
    index = count // 2
    if point is not None:
        voxel = np.linalg.solve(affine, np.array([*point, 1.0]))
        index = int(np.clip(np.rint(voxel[axial]), 0, count - 1))
    i_axis, j_axis = (a for a in range(3) if a != axial)
    origin = affine[:3, 3] + affine[:3, axial] * index
    steps = affine[:3, [i_axis, j_axis]]
    image_number = None
    if axial == 2 and not stack.resampled:
        frame = stack.frames[index]
        values = stored_values(frame.dataset, frame.source)[frame.number or 0]
        if values.ndim != 2:
            raise NotAVolumeError(f"{frame.source}: a colour image, not a CT or MR slice")
        plane = values.T.astype(np.float32) * np.float32(frame.slope) + np.float32(frame.intercept)
        number = frame.dataset.get("InstanceNumber") if frame.number is None else None
        image_number = int(number) if number is not None else None
    else:
        plane = np.take(load_stack(stack, "").array, index, axis=axial)
    return _Plane(plane, origin, steps, affine[:3, axial], index, count, image_number)


def _header(data: bytes, key: str) -> Dataset:
    """An instance whose pixel data is read only when used (3x faster than all of it)."""
    try:
        return pydicom.dcmread(io.BytesIO(data), defer_size="64 KB")
    except Exception as exc:  # pydicom raises many types on a broken file
        raise NotAVolumeError(f"{key} cannot be read as DICOM: {exc}") from exc


def _sampled(mask: np.ndarray, affine: np.ndarray, lps: np.ndarray) -> np.ndarray:
    """The mask at each LPS position (nearest voxel; False outside its grid)."""
    inverse = np.linalg.inv(affine)
    voxel = np.rint(lps @ inverse[:3, :3].T + inverse[:3, 3]).astype(np.int64)
    inside = np.all((voxel >= 0) & (voxel < np.asarray(mask.shape)), axis=-1)
    out = np.zeros(lps.shape[:-1], dtype=bool)
    v = voxel[inside]
    out[inside] = mask[v[:, 0], v[:, 1], v[:, 2]]
    return out


def _eroded(m: np.ndarray) -> np.ndarray:
    """A 2D mask less its edge (4-neighbour erosion; beyond the image counts as outside)."""
    p = np.pad(m, 1)
    return m & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]


def _window(values: np.ndarray, modality: str) -> tuple[float, float, str]:
    """The grey scale's lowest and highest value, and how the caption names it."""
    if modality == "CT":
        width, level = CT_WINDOW
        return level - width / 2, level + width / 2, f"window W{width:g}/L{level:g} HU"
    low, high = (float(v) for v in np.percentile(values, MR_PERCENTILES))
    lo_p, hi_p = MR_PERCENTILES
    return (
        low,
        high,
        (
            f"window from the {lo_p:g} to the {hi_p:g} percentile of the slice "
            f"({low:.0f}-{high:.0f})"
        ),
    )


def _view(plane: _Plane) -> tuple[np.ndarray, np.ndarray]:
    """Which plane[i, j] each image pixel shows: columns along the in-plane axis nearest the
    patient's left, rows along posterior; the pixels of the coarser axis are repeated when the
    pixel spacing is unequal, so that the image is not stretched."""
    directions = plane.steps / np.linalg.norm(plane.steps, axis=0)
    transposed = abs(directions[0, 1]) >= abs(directions[0, 0])  # j runs left-right: rows are i
    spacing = np.linalg.norm(plane.steps, axis=0)
    row_axis, column_axis = (0, 1) if transposed else (1, 0)
    picks = []
    for axis, lps in ((row_axis, 1), (column_axis, 0)):  # rows run to P (y), columns to L (x)
        n, scale = plane.values.shape[axis], float(spacing[axis] / spacing.min())
        scale = min(scale, MAX_SIDE / n) if scale > 1.01 else 1.0
        source = np.minimum((np.arange(round(n * scale)) / scale).astype(np.int64), n - 1)
        picks.append(source[::-1] if directions[lps, axis] < 0 else source)
    rows, columns = np.meshgrid(*picks, indexing="ij")
    return (rows, columns) if transposed else (columns, rows)


def _draw_cross(rgb: np.ndarray, centre: tuple[float, float]) -> None:
    """A cross with an open centre, so that what it points at stays visible (its arms run
    along the plane's axes: along the image's axes once oriented)."""
    size = max(rgb.shape[:2])
    gap, arm, half = max(3, size // 80), max(8, size // 28), max(1, size // 400)
    r, c = (int(round(v)) for v in centre)
    for sign in (-1, 1):
        near, far = sorted((r + sign * gap, r + sign * arm))
        rgb[max(near, 0) : max(far + 1, 0), max(c - half, 0) : c + half + 1] = MARKER_RGB
        near, far = sorted((c + sign * gap, c + sign * arm))
        rgb[max(r - half, 0) : r + half + 1, max(near, 0) : max(far + 1, 0)] = MARKER_RGB


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image  # matplotlib's own PNG writer: 2x slower on the same array

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()
