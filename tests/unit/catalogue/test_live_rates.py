"""The live rates of a model version: the share of its results in the catalogue at or above the
threshold, over all of them (active and shadow), and nothing for a version without results."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.live_results import add_live_results

from triage.catalogue import Catalogue, LiveRates
from triage.results import Role


@pytest.fixture
def cat(tmp_path: Path) -> Iterator[Catalogue]:
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'catalogue.db'}")
    yield catalogue
    catalogue.close()


def test_the_positive_rate_counts_results_at_or_above_the_threshold(cat: Catalogue) -> None:
    # 0.5 is at the threshold: positive
    add_live_results(cat, "ich", "1+a", [0.1, 0.5, 0.7, 0.2], threshold=0.5)
    add_live_results(cat, "ich", "1+a", [0.9], threshold=0.5, role=Role.SHADOW)
    add_live_results(cat, "ich", "2+b", [0.9, 0.9], threshold=0.95)
    add_live_results(cat, "other", "1+a", [0.9, 0.9])
    assert cat.live_rates("ich", "1+a") == LiveRates(results=5, positive_rate=pytest.approx(0.6))
    assert cat.live_rates("ich", "2+b") == LiveRates(results=2, positive_rate=0.0)


def test_a_version_without_results_has_no_rate(cat: Catalogue) -> None:
    assert cat.live_rates("ich", "1+a") == LiveRates(results=0, positive_rate=None)
