"""Prometheus exposition of the pipeline's numbers.

The API's ``/metrics`` shows HTTP metrics (Litestar's Prometheus middleware) and, read
at scrape time, the same per-stage numbers as ``GET /stages`` as gauges. Workers
expose Dramatiq's own metrics plus a per-stage duration histogram and outcome counter
(:class:`StageMetrics`), on Dramatiq's exposition port.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from pipeline.monitoring.stages import Overview

EMBED_CALL_TEXTS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
STAGE_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class _OverviewCollector(Collector):
    def __init__(self, overview: Overview) -> None:
        self.overview = overview

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stages = self.overview.stages
        queue = GaugeMetricFamily(
            "pipeline_queue_messages",
            "Messages in Redis per stage queue",
            labels=["stage", "state"],
        )
        rows = GaugeMetricFamily(
            "pipeline_stage_runs", "Unfinished stage rows by status", labels=["stage", "status"]
        )
        recent = GaugeMetricFamily(
            "pipeline_stage_attempts_recent",
            "Attempts finished in the last window, by outcome",
            labels=["stage", "outcome"],
        )
        latency = GaugeMetricFamily(
            "pipeline_stage_duration_recent_seconds",
            "Duration quantiles of recent successful attempts",
            labels=["stage", "quantile"],
        )
        oldest = GaugeMetricFamily(
            "pipeline_stage_oldest_waiting_seconds",
            "Age of the oldest queued stage row",
            labels=["stage"],
        )
        for s in stages:
            for state, value in (
                ("ready", s.queue.ready),
                ("delayed", s.queue.delayed),
                ("dead", s.queue.dead),
            ):
                queue.add_metric([s.stage, state], value)
            for status, value in (
                ("queued", s.queued),
                ("running", s.in_flight),
                ("retrying", s.retrying),
            ):
                rows.add_metric([s.stage, status], value)
            recent.add_metric([s.stage, "succeeded"], s.succeeded_5m)
            recent.add_metric([s.stage, "failed"], s.failed_5m)
            for quantile, ms in (("0.5", s.p50_ms), ("0.95", s.p95_ms)):
                if ms is not None:
                    latency.add_metric([s.stage, quantile], ms / 1000)
            oldest.add_metric([s.stage], s.oldest_waiting_s or 0.0)
        documents = GaugeMetricFamily(
            "pipeline_documents", "Documents by status", labels=["status"]
        )
        for status, count in self.overview.documents.items():
            documents.add_metric([status], count)
        yield from (queue, rows, recent, latency, oldest, documents)


def render_overview(overview: Overview) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_OverviewCollector(overview))
    return generate_latest(registry)


class _RetentionCollector(Collector):
    def __init__(self, totals: dict[str, int]) -> None:
        self.totals = totals

    def collect(self) -> Iterator[CounterMetricFamily]:
        removed = CounterMetricFamily(
            "pipeline_retention_removed",
            "Rows the retention sweeps removed, by kind (kept in Postgres: every process's)",
            labels=["kind"],
        )
        for kind, count in sorted(self.totals.items()):
            removed.add_metric([kind], count)
        yield removed


def render_retention(totals: dict[str, int]) -> bytes:
    """``pipeline_retention_removed_total{kind}`` from ``retention_totals``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_RetentionCollector(totals))
    return generate_latest(registry)


class StageMetrics:
    """Per-stage duration histogram and outcome counter, created on first use.

    Created lazily, in the worker process that observes; ``pipeline worker`` sets
    ``PROMETHEUS_MULTIPROC_DIR`` so that every worker process writes to the store
    Dramatiq's exposition server reads.
    """

    def __init__(self) -> None:
        self._duration: Any = None
        self._outcomes: Any = None

    def observe(self, stage: str, outcome: str, seconds: float) -> None:
        if self._duration is None:
            from prometheus_client import Counter, Histogram

            self._duration = Histogram(
                "pipeline_stage_duration_seconds",
                "Duration of stage attempts",
                ["stage", "outcome"],
                buckets=STAGE_DURATION_BUCKETS,
            )
            self._outcomes = Counter(
                "pipeline_stage_outcomes", "Stage attempts by outcome", ["stage", "outcome"]
            )
        self._duration.labels(stage, outcome).observe(seconds)
        self._outcomes.labels(stage, outcome).inc()


class EmbedMetrics:
    """How the model's shared calls were filled: texts and requests per call, and time.

    ``pipeline_embed_call_texts`` and ``pipeline_embed_call_requests`` (histograms) say
    whether documents in flight share calls (requests per call above 1 under load);
    ``pipeline_embed_call_seconds`` is the model's own time. The histograms are the
    process's, created on first use (like :class:`StageMetrics`) and shared by every
    instance, since a registry holds a name once.
    """

    _histograms: ClassVar[tuple[Any, Any, Any] | None] = None
    _lock: ClassVar = threading.Lock()

    def observe_call(self, requests: int, texts: int, seconds: float) -> None:
        texts_per_call, requests_per_call, duration = self._created()
        texts_per_call.observe(texts)
        requests_per_call.observe(requests)
        duration.observe(seconds)

    @classmethod
    def _created(cls) -> tuple[Any, Any, Any]:
        with cls._lock:
            if cls._histograms is None:
                from prometheus_client import Histogram

                cls._histograms = (
                    Histogram(
                        "pipeline_embed_call_texts",
                        "Texts per model call",
                        buckets=EMBED_CALL_TEXTS_BUCKETS,
                    ),
                    Histogram(
                        "pipeline_embed_call_requests",
                        "Requests (attempts' batches, queries) or parts of them in one model call",
                        buckets=EMBED_CALL_TEXTS_BUCKETS,
                    ),
                    Histogram(
                        "pipeline_embed_call_seconds",
                        "Duration of model calls",
                        buckets=STAGE_DURATION_BUCKETS,
                    ),
                )
            return cls._histograms
