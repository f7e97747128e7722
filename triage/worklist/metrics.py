"""The node's ``/metrics``: the Prometheus text exposition of the catalogue, read at scrape time,
and of this process's own counters (what its receiver took and refused; its CPU and memory).

Figures over the recent studies (the window of `triage.catalogue.metrics_queries`: the newest
5000 studies whose last instance arrived in the last 24 h) are *gauge histograms*: the
distribution of the window as it is now, which moves down as well as up when studies leave the
window: read them as they are, e.g. ``histogram_quantile(0.9,
triage_result_latency_seconds_bucket)``, never through ``rate()``. In the classic
text format a gauge histogram is typed ``histogram``, with ``_bucket`` samples, and its sum and
count follow as the gauges ``_gsum`` and ``_gcount``.

Every metric and what it measures:

``triage_instances_received_total{outcome}``, ``triage_instances_rejected_total{status}``,
``triage_associations_rejected_total``
    counters of this process's receiver (`triage.receive.counters`)
``triage_catalogue_up``
    1 when this scrape read the catalogue, else 0 (and no catalogue figures follow)
``triage_catalogue_scrape_duration_seconds``
    how long this scrape's catalogue queries took
``triage_studies{state}``
    every study in the catalogue, by state: receiving, triaging, triaged, not analysed
``triage_queue_depth``
    the studies waiting for a triage run: receiving and quiet for TRIAGE_QUIET_SECONDS
    (complete, not claimed yet) plus triaging (claimed, not finished)
``triage_outbox_rows{state,kind}``
    the outbox rows waiting (pending) or dead-lettered (dead), by kind (sr, kos, seg, hl7)
``triage_window_studies``
    how many studies the window holds (what the figures below are over)
``triage_recent_studies{priority}``
    the window's studies by priority (urgent, routine, not analysed; none before triage)
``triage_recent_outbox_rows{state,kind}``
    the outbox rows of the window's studies, by state (pending, delivered, dead) and kind
``triage_result_latency_seconds``
    from a study's last instance received to its first SR delivered to the PACS after it
``triage_stage_duration_seconds{stage}``
    the last triage run's time per stage (assemble, preprocess, infer, report, run, ...)
``triage_model_score{model,version,role}``
    the probabilities a model version gave on the window's studies (active or shadow)
``triage_model_positive_ratio{model,version,role}``
    the share of those results at or above the version's threshold (positive findings)
``triage_model_uncertain_ratio{model,version,role}``
    the share of results checked for being out of distribution whose input was unlike the
    model's reference (`triage.results.is_uncertain`); absent when none was checked
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from triage.catalogue import Catalogue
from triage.catalogue.metrics_queries import (
    SCORE_BUCKETS,
    WINDOW,
    WINDOW_STUDIES,
    MetricsFigures,
)
from triage.errors import StorageError
from triage.receive.counters import REGISTRY as RECEIVER_COUNTERS

log = logging.getLogger(__name__)

#: the latency buckets, seconds: a result within seconds to one that took ten minutes
LATENCY_BUCKETS = (1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
#: the stage buckets, seconds: a stage of a tenth of a second to one of ten minutes
STAGE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
#: TRIAGE_QUIET_SECONDS's default, for a caller that does not pass the node's own
QUIET_SECONDS = 5.0

_WINDOW = (
    f"the newest {WINDOW_STUDIES} studies whose last instance arrived in the last "
    f"{WINDOW.total_seconds() / 3600:g} h"
)


def metrics_payload(
    catalogue: Catalogue, *, quiet_seconds: float = QUIET_SECONDS
) -> tuple[bytes, str]:
    """The ``/metrics`` body and its content type (Prometheus text format 0.0.4).

    ``quiet_seconds``: the node's TRIAGE_QUIET_SECONDS, which says when a receiving study is
    complete and so in the queue. A catalogue that cannot be read gives
    ``triage_catalogue_up 0`` and the process's own counters, never a failed scrape.
    """
    return generate_latest(metrics_registry(catalogue, quiet_seconds)), CONTENT_TYPE_LATEST


def metrics_registry(catalogue: Catalogue, quiet_seconds: float) -> CollectorRegistry:
    """A registry of the catalogue's figures, the receiver's counters and the process's own
    (CPU, memory, open files; Python's version): nothing is read until it is collected."""
    registry = CollectorRegistry()
    registry.register(CatalogueCollector(catalogue, quiet_seconds))
    registry.register(_Collected(RECEIVER_COUNTERS))
    registry.register(_Collected(PROCESS_COLLECTOR))
    registry.register(_Collected(PLATFORM_COLLECTOR))
    return registry


class _Collected(Collector):
    """Another collector's metrics, in a second registry (a collector is registered once per
    registry; the receiver's counters live in their own)."""

    def __init__(self, source: Collector | CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterable[Metric]:
        return self.source.collect()


class CatalogueCollector(Collector):
    """The catalogue's figures, read when a scrape collects them (`metrics_figures`)."""

    def __init__(self, catalogue: Catalogue, quiet_seconds: float) -> None:
        self.catalogue = catalogue
        self.quiet_seconds = quiet_seconds

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            figures = self.catalogue.metrics_figures(self.quiet_seconds)
        except StorageError as exc:
            log.warning("metrics: %s", exc)
            yield GaugeMetricFamily("triage_catalogue_up", _UP, value=0)
            return
        yield GaugeMetricFamily("triage_catalogue_up", _UP, value=1)
        yield GaugeMetricFamily(
            "triage_catalogue_scrape_duration_seconds",
            "How long this scrape's catalogue queries took, in seconds",
            value=time.perf_counter() - started,
        )
        yield from catalogue_metrics(figures)


_UP = "1 when this scrape could read the catalogue, 0 when it could not (see the node's log)"


def catalogue_metrics(figures: MetricsFigures) -> Iterator[Metric]:
    """The metric families of one scrape's catalogue figures (the module docstring lists them)."""
    studies = GaugeMetricFamily(
        "triage_studies", "Studies in the catalogue, by state", labels=["state"]
    )
    for state, n in figures.studies_by_state.items():
        studies.add_metric([state], n)
    yield studies
    yield GaugeMetricFamily(
        "triage_queue_depth",
        "Studies waiting for a triage run: receiving and quiet for TRIAGE_QUIET_SECONDS "
        "(complete, not claimed yet) plus triaging (claimed, not finished)",
        value=figures.queue_depth,
    )
    outbox = GaugeMetricFamily(
        "triage_outbox_rows",
        "Outbox rows (objects to send to one destination) waiting (pending) or dead-lettered "
        "(dead), by state and kind (sr, kos, seg, hl7)",
        labels=["state", "kind"],
    )
    for (state, kind), n in sorted(figures.outbox.items()):
        outbox.add_metric([state, kind], n)
    yield outbox
    yield GaugeMetricFamily(
        "triage_window_studies",
        f"Studies in the window the recent figures are over: {_WINDOW}",
        value=figures.window_studies,
    )
    recent = GaugeMetricFamily(
        "triage_recent_studies",
        f"Studies in the window ({_WINDOW}), by priority (none: not triaged yet)",
        labels=["priority"],
    )
    for priority, n in figures.recent_by_priority.items():
        recent.add_metric([priority], n)
    yield recent
    recent_outbox = GaugeMetricFamily(
        "triage_recent_outbox_rows",
        f"Outbox rows of the studies in the window ({_WINDOW}), by state (pending, delivered, "
        "dead) and kind (sr, kos, seg, hl7)",
        labels=["state", "kind"],
    )
    for (state, kind), n in sorted(figures.recent_outbox.items()):
        recent_outbox.add_metric([state, kind], n)
    yield recent_outbox
    latency = GaugeHistogramMetricFamily(
        "triage_result_latency_seconds",
        "Seconds from a study's last instance received to its first SR delivered to the PACS "
        f"after it, over the window ({_WINDOW})",
    )
    latency.add_metric([], *_buckets(figures.latencies, LATENCY_BUCKETS))
    yield latency
    stages = GaugeHistogramMetricFamily(
        "triage_stage_duration_seconds",
        "Seconds per stage of a study's last triage run (assemble, preprocess, infer, report, "
        f"run, ...), over the window ({_WINDOW})",
        labels=["stage"],
    )
    for stage, seconds in figures.stage_seconds.items():
        stages.add_metric([stage], *_buckets(seconds, STAGE_BUCKETS))
    yield stages
    yield from _model_metrics(figures)


def _model_metrics(figures: MetricsFigures) -> Iterator[Metric]:
    labels = ["model", "version", "role"]
    scores = GaugeHistogramMetricFamily(
        "triage_model_score",
        f"The probabilities a model version gave, over the window ({_WINDOW})",
        labels=labels,
    )
    positive = GaugeMetricFamily(
        "triage_model_positive_ratio",
        "The share of a model version's results at or above its threshold (positive findings), "
        f"over the window ({_WINDOW})",
        labels=labels,
    )
    uncertain = GaugeMetricFamily(
        "triage_model_uncertain_ratio",
        "The share of a model version's results checked for being out of distribution whose "
        f"input was unlike the model's reference (uncertain), over the window ({_WINDOW})",
        labels=labels,
    )
    for model in figures.models:
        values = [model.model_name, model.model_version, model.role]
        counts = [*model.score_buckets, model.rates.results]
        bounds = [*(_le(b) for b in SCORE_BUCKETS), "+Inf"]
        scores.add_metric(values, list(zip(bounds, counts, strict=True)), model.score_sum)
        if model.rates.positive_rate is not None:
            positive.add_metric(values, model.rates.positive_rate)
        if model.rates.ood_rate is not None:
            uncertain.add_metric(values, model.rates.ood_rate)
    yield scores
    yield positive
    yield uncertain


def _buckets(
    values: Sequence[float], bounds: Sequence[float]
) -> tuple[list[tuple[str, float]], float]:
    """The cumulative buckets (upper bound, how many values at or below it; +Inf last) and the
    sum of ``values``."""
    ordered = sorted(values)
    buckets = [(_le(b), float(bisect.bisect_right(ordered, b))) for b in bounds]
    return [*buckets, ("+Inf", float(len(ordered)))], float(sum(ordered))


def _le(bound: float) -> str:
    return repr(float(bound))
