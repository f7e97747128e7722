"""`triage inspect` for people: one block per series, geometry first, then why not / warnings."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from rich.markup import escape

from triage.app.inspect_models import ModelChoice, SeriesVerdict
from triage.imaging.inspect import Inspection, SeriesReport
from triage.imaging.volume import Geometry


def _numbers(values: tuple[float, ...] | list[float], digits: int = 3) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def _geometry_lines(geometry: Geometry, label: str) -> Iterator[str]:
    c, r, s = geometry.shape
    yield (
        f"  [green]{label}[/] {c} x {r} x {s} (columns x rows x slices), "
        f"spacing {_numbers(geometry.spacing)} mm"
    )
    yield f"    origin ({_numbers(geometry.origin, 2)}) mm LPS"
    for name, column in zip(("row", "column", "slice"), geometry.direction.T, strict=True):
        yield f"    {name:6} axis ({_numbers(tuple(column), 4)})"


def series_lines(report: SeriesReport) -> Iterator[str]:
    title = " ".join(
        part
        for part in (
            f"Series {escape(report.series_number)}" if report.series_number else "Series",
            f'"{escape(report.series_description)}"' if report.series_description else "",
            escape(report.modality),
            escape(report.body_part_examined),
        )
        if part
    )
    yield f"[bold]{title}[/]  {escape(report.series_instance_uid)}"
    frames = f", {report.frames} frames" if report.frames != report.instances else ""
    yield (
        f"  {report.instances} instance(s){frames}; {escape(', '.join(report.sop_classes))}; "
        f"{escape(', '.join(report.transfer_syntaxes))}"
    )
    if report.image_type:
        yield f"  image type {escape(chr(92).join(report.image_type))}"
    if report.summary is not None and report.summary.modality.upper() in ("CT", "PT"):
        s = report.summary
        thickness = "unknown" if s.slice_thickness is None else f"{s.slice_thickness:g} mm"
        yield (
            f"  kernel {escape(s.convolution_kernel or '(none)')}, slice thickness {thickness}, "
            f"contrast agent {escape(s.contrast_agent or '(none)')}"
        )
    for refusal in report.refused:
        yield f"  [red]refused:[/] {escape(refusal)}"
    if report.volume is not None:
        yield from _geometry_lines(report.volume, "volume")
    for t, geometry in enumerate(report.time_points, start=1):
        if t == 1 or t == len(report.time_points):
            yield from _geometry_lines(geometry, f"time point {t}")
        elif t == 2:
            yield f"    ... {len(report.time_points) - 2} more time point(s) ..."
    if report.reason:
        yield f"  [yellow]not a volume:[/] {escape(report.reason)}"
    for warning in report.warnings:
        yield f"  [yellow]warning:[/] {escape(warning)}"


def _series_label(verdict: SeriesVerdict) -> str:
    number = f"series {escape(verdict.series_number or '?')}"
    if verdict.series_description:
        return f'{number} "{escape(verdict.series_description)}"'
    return number


def model_lines(source: str, choices: Sequence[ModelChoice]) -> Iterator[str]:
    """Which series each model would choose, and why not each other one."""
    yield f"[bold]Models[/] from {escape(source)}"
    if not choices:
        yield "  none: no series would be analysed"
    for choice in choices:
        m = choice.model
        name = " ".join(
            part for part in (m.name, m.version, f"({m.role})" if m.role else "") if part
        )
        if m.error:
            yield f"  {escape(name)}: [red]options cannot be read:[/] {escape(m.error)}"
            continue
        if choice.chosen is not None:
            yield f"  {escape(name)}: [green]would analyse {_series_label(choice.chosen)}[/]"
        else:
            yield f"  {escape(name)}: [yellow]would analyse no series (not analysed)[/]"
        for verdict in choice.series:
            if not verdict.chosen:
                yield f"    not {_series_label(verdict)}: {escape(verdict.reason or '')}"


def inspection_lines(
    inspection: Inspection, source: str = "", choices: Sequence[ModelChoice] = ()
) -> Iterator[str]:
    for report in inspection.series:
        yield from series_lines(report)
        yield ""
    for item in inspection.unreadable:
        yield f"[red]skipped[/] {escape(item.path)}: {escape(item.reason)}"
    if source:
        yield from model_lines(source, choices)
    volumes = sum(1 for s in inspection.series if s.volume is not None or s.time_points)
    yield (
        f"{len(inspection.series)} series ({volumes} with volume(s)), "
        f"{len(inspection.unreadable)} file(s) skipped"
    )
