"""What the pages draw and say: the ROC curve and histogram (inline SVG), a study's age."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta

from triage.worklist.presenting import age_text, histogram_svg, roc_svg


def _points(svg: str) -> list[tuple[float, float]]:
    polyline = ET.fromstring(svg).find("{*}polyline")
    assert polyline is not None
    return [tuple(map(float, p.split(","))) for p in polyline.attrib["points"].split()]  # type: ignore[misc]


def test_a_perfect_model_climbs_the_left_edge_first() -> None:
    scores = [{"label": 1, "probability": p} for p in (0.9, 0.8)] + [
        {"label": 0, "probability": p} for p in (0.2, 0.1)
    ]
    points = _points(roc_svg(scores, 0.5))
    xs = [x for x, _ in points]
    assert points[0] == (30.0, 230.0)  # (0, 0) at the bottom left
    assert xs[:3] == [30.0, 30.0, 30.0]  # both positives before any negative: FPR stays 0
    assert points[-1] == (230.0, 30.0)  # (1, 1) at the top right
    circle = ET.fromstring(roc_svg(scores, 0.5)).find("{*}circle")
    assert circle is not None and (circle.attrib["cx"], circle.attrib["cy"]) == ("30.0", "30.0")


def test_no_roc_without_positives_and_negatives() -> None:
    assert roc_svg([{"label": 0, "probability": 0.3}], 0.5) == ""
    assert roc_svg([], 0.5) == ""


def test_the_histogram_has_a_bar_per_bin_and_the_threshold() -> None:
    svg = histogram_svg([0, 1, 2, 0, 0, 0, 0, 0, 0, 5], 0.4)
    root = ET.fromstring(svg)
    assert len(root.findall("{*}rect")) == 10
    assert re.search(r"0\.9-1\.0: 5", svg)
    line = root.find("{*}line")
    assert line is not None and float(line.attrib["x1"]) == 20 + 0.4 * 260


def test_age_in_words() -> None:
    now = datetime(2026, 12, 1, 12, 0, 0)
    assert age_text(now - timedelta(seconds=42), now) == "42 s"
    assert age_text(now - timedelta(minutes=7), now) == "7 min"
    assert age_text(now - timedelta(hours=2, minutes=5), now) == "2 h 05 min"
    assert age_text(now - timedelta(days=3, hours=1), now) == "3 d 1 h"
