"""Planning a series: which frames make which volume(s), from headers only.

Every instance becomes frames (`triage.imaging.frames`), localizers are left out, the same SOP
instance or frame seen twice is dropped, every frame must share one orientation, size and pixel
spacing; frames are grouped by position along the slice normal (never by InstanceNumber), a
position holding the same pixels twice keeps one copy, and a position repeated with different
pixels at every position is a 4D series, split into time points. Each group in order becomes a
`Stack` (`triage.imaging.geometry.stack_of`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydicom.dataset import Dataset

from triage.attributes import readable_text
from triage.errors import NotAVolumeError
from triage.imaging.frames import Frame, frames_of, is_localizer
from triage.imaging.geometry import (
    DEFAULT_OPTIONS,
    MIN_SLICES,
    AssemblyOptions,
    Stack,
    stack_of,
)

ORIENTATION_TOLERANCE = 1e-3  # direction cosines
POSITION_TOLERANCE_MM = 0.01  # two frames closer than this share a position


def collect_frames(
    datasets: Sequence[Dataset], names: Sequence[str] | None = None
) -> tuple[list[Frame], list[str]]:
    """Every frame of every instance, and warnings. Localizers in the series are left out (a
    scout sent with the slices); any other instance that is not a slice stops it."""
    names = names or [
        readable_text(ds, "SOPInstanceUID") or f"image {i + 1}" for i, ds in enumerate(datasets)
    ]
    frames: list[Frame] = []
    localizers = 0
    for ds, name in zip(datasets, names, strict=True):
        try:
            if is_localizer(ds):
                localizers += 1
                continue
            frames.extend(frames_of(ds, name))
        except NotAVolumeError:
            raise
        except Exception as exc:  # a corrupt element: pydicom raises many types
            raise NotAVolumeError(f"{name}: the header cannot be read ({exc})") from exc
    if localizers and not frames:
        raise NotAVolumeError(f"localizer (scout) image(s) only ({localizers})")
    warnings = [f"left out {localizers} localizer (scout) image(s)"] if localizers else []
    return frames, warnings


def plan_stacks(
    frames: Sequence[Frame],
    options: AssemblyOptions = DEFAULT_OPTIONS,
    warnings: Sequence[str] = (),
) -> list[Stack]:
    """The volume(s) these frames make: one, or one per time point of a 4D series.

    Raises NotAVolumeError with the reason when they make none.
    """
    if not frames:
        raise NotAVolumeError("no images in the series")
    warnings = list(warnings)
    unique = _without_repeated_instances(frames, warnings)
    _check_same_plane(unique)
    positions = _group_by_position(unique, warnings)
    if len(positions) < MIN_SLICES:
        images = sum(len(group) for group in positions)
        what = (
            "a single image" if images == 1 else f"{images} images at {len(positions)} position(s)"
        )
        raise NotAVolumeError(f"{what}: at least {MIN_SLICES} slice positions make a volume")
    counts = {len(group) for group in positions}
    if counts == {1}:
        return [stack_of([group[0] for group in positions], options, warnings, None)]
    if len(counts) == 1:
        repeats = counts.pop()
        for group in positions:
            keys = [f.time_key for f in group]
            if len(set(keys)) != len(keys):
                raise NotAVolumeError(
                    f"{len(positions)} slice positions each hold {repeats} different images "
                    "that nothing (time, acquisition or instance number) tells apart"
                )
        ordered = [sorted(group, key=lambda f: f.time_key) for group in positions]
        return [
            stack_of([group[t] for group in ordered], options, warnings, t) for t in range(repeats)
        ]
    busy = sum(1 for group in positions if len(group) > 1)
    raise NotAVolumeError(
        f"duplicate positions: {busy} of {len(positions)} slice positions hold more than one "
        "different image (a mixed or repeated acquisition)"
    )


def _without_repeated_instances(frames: Sequence[Frame], warnings: list[str]) -> list[Frame]:
    seen: set[tuple[str, int | None]] = set()
    unique = []
    for frame in frames:
        if frame.identity in seen:
            continue
        seen.add(frame.identity)
        unique.append(frame)
    if len(unique) < len(frames):
        warnings.append(f"dropped {len(frames) - len(unique)} copy(ies) of the same instance")
    return unique


def _check_same_plane(frames: Sequence[Frame]) -> None:
    orientations = np.array([f.orientation for f in frames])
    if not np.isclose(orientations, orientations[0], atol=ORIENTATION_TOLERANCE).all():
        planes = {
            tuple(np.round(np.asarray(f.orientation) / ORIENTATION_TOLERANCE)) for f in frames
        }
        raise NotAVolumeError(
            f"mixed orientations: the images lie in {len(planes)} different planes"
        )
    sizes = {(f.rows, f.columns) for f in frames}
    if len(sizes) > 1:
        listed = ", ".join(f"{r}x{c}" for r, c in sorted(sizes))
        raise NotAVolumeError(f"images have different sizes ({listed})")
    spacings = np.array([f.pixel_spacing for f in frames])
    if not np.isclose(spacings, spacings[0], rtol=1e-3).all():
        raise NotAVolumeError("images have different pixel spacings")


def _group_by_position(frames: Sequence[Frame], warnings: list[str]) -> list[list[Frame]]:
    """Frames grouped by ImagePositionPatient, groups in order along the slice normal."""
    normal = np.cross(frames[0].row_direction, frames[0].column_direction)
    points = np.array([f.position for f in frames])
    along = points @ normal
    groups: list[list[Frame]] = []
    anchors: list[np.ndarray] = []
    for index in np.argsort(along, kind="stable"):
        frame = frames[int(index)]
        if anchors and np.linalg.norm(points[index] - anchors[-1]) < POSITION_TOLERANCE_MM:
            groups[-1].append(frame)
        else:
            groups.append([frame])
            anchors.append(points[index])
    dropped = 0
    for g, group in enumerate(groups):
        kept: list[Frame] = []
        for frame in group:
            if any(_same_pixels(frame, other) for other in kept):
                dropped += 1
            else:
                kept.append(frame)
        groups[g] = kept
    if dropped:
        warnings.append(f"dropped {dropped} duplicate slice(s): same position, same pixels")
    return groups


def _same_pixels(a: Frame, b: Frame) -> bool:
    if a.number is not None or b.number is not None:
        return False
    if (a.slope, a.intercept) != (b.slope, b.intercept):
        return False
    return bool(a.dataset.get("PixelData") == b.dataset.get("PixelData"))
