"""Prometheus metrics: the cluster's jobs and workers, read from the database at each scrape, and this
replica's own HTTP traffic and process.

Cluster metrics are computed, not counted in memory: every replica answers the same values (scrape one, or
keep one series with `max without (instance)`), and a replica that dies loses nothing. HTTP and process
metrics are this replica's (Prometheus tells replicas apart by their `instance` label). docs/operations.md
lists every metric. Nothing here knows HTTP types; `framecast.api.metrics_router` serves `render`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from framecast.store.jobs import JobStore, WorkerRecord
from framecast.store.statistics import (
    OUTCOMES,
    DurationHistogram,
    JobSnapshot,
    JobStatistics,
)

logger = logging.getLogger("framecast.metrics")

# Workers silent for longer than this are left out: a crashed worker's row is never removed, and its series
# would otherwise stay forever. Until then it shows as framecast_worker_up 0 with a growing heartbeat age.
WORKER_WINDOW_S = 3600.0
WORKER_STATES = ("loading", "ready", "error")
# HTTP latencies: from a status poll (milliseconds) to a synchronous /run or an SSE stream (minutes).
HTTP_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"


class ClusterCollector:
    """A prometheus_client collector: one `JobStatistics` snapshot and one look at the workers per scrape.

    A failed database read is logged and shows as `framecast_cluster_statistics_up 0`; this replica's own
    metrics are still served.
    """

    def __init__(
        self,
        *,
        statistics: JobStatistics,
        store: JobStore,
        endpoint_ids: Sequence[str],
        worker_timeout_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.statistics = statistics
        self.store = store
        # Endpoints this server binds: their series exist (at 0) before their first job.
        self.endpoint_ids = tuple(endpoint_ids)
        self.worker_timeout_s = worker_timeout_s
        self.clock = clock

    def describe(self) -> Iterable[Metric]:
        # Registering must not read the database: the same families, without samples.
        return self._families(None, None, now=0.0, read_s=0.0)

    def collect(self) -> Iterable[Metric]:
        started = time.perf_counter()
        try:
            snapshot = self.statistics.snapshot()
            now = self.clock()
            workers = self.store.list_workers(alive_after=now - WORKER_WINDOW_S)
        except Exception:
            logger.exception("could not read the cluster statistics from the database")
            return self._families(None, None, now=0.0, read_s=time.perf_counter() - started, failed=True)
        return self._families(snapshot, workers, now=now, read_s=time.perf_counter() - started)

    def _families(
        self,
        snapshot: JobSnapshot | None,
        workers: Sequence[WorkerRecord] | None,
        *,
        now: float,
        read_s: float,
        failed: bool = False,
    ) -> list[Metric]:
        up = GaugeMetricFamily(
            "framecast_cluster_statistics_up", "1 when the job and worker metrics could be read from the database."
        )
        read = GaugeMetricFamily(
            "framecast_cluster_statistics_read_seconds", "Time this scrape spent reading the job and worker tables."
        )
        if snapshot is not None or failed:
            up.add_metric([], 0.0 if failed else 1.0)
            read.add_metric([], read_s)
        return [up, read, *self._job_families(snapshot, now), *self._worker_families(workers, now)]

    def _job_families(self, snapshot: JobSnapshot | None, now: float) -> list[Metric]:
        labels = ["endpoint"]
        depth = GaugeMetricFamily("framecast_queue_depth", "Jobs waiting in the queue (IN_QUEUE).", labels=labels)
        running = GaugeMetricFamily("framecast_jobs_running", "Jobs being run (IN_PROGRESS).", labels=labels)
        oldest = GaugeMetricFamily(
            "framecast_queue_oldest_age_seconds", "Age of the oldest queued job (0 when none is queued).", labels=labels
        )
        finished = CounterMetricFamily(
            "framecast_jobs_finished",
            "Finished jobs by outcome: ok (2xx), cancelled (499), client_error (other 4xx), server_error (5xx).",
            labels=["endpoint", "outcome"],
        )
        failures = CounterMetricFamily(
            "framecast_job_failures",
            "Finished jobs that did not succeed, by fal error_type.",
            labels=["endpoint", "error_type"],
        )
        queue_wait = HistogramMetricFamily(
            "framecast_job_queue_seconds", "Finished jobs: time from submit to first start.", labels=labels
        )
        run_time = HistogramMetricFamily(
            "framecast_job_run_seconds",
            "Finished jobs: time from first start to finish (retries included).",
            labels=labels,
        )
        families: list[Metric] = [depth, running, oldest, finished, failures, queue_wait, run_time]
        if snapshot is None:
            return families
        endpoints = sorted({*self.endpoint_ids, *snapshot.active, *snapshot.finished})
        for endpoint_id in endpoints:
            active = snapshot.active.get(endpoint_id)
            depth.add_metric([endpoint_id], active.queued if active else 0)
            running.add_metric([endpoint_id], active.running if active else 0)
            queued_at = active.oldest_queued_at if active else None
            oldest.add_metric([endpoint_id], 0.0 if queued_at is None else max(0.0, now - queued_at))
            totals = snapshot.finished.get(endpoint_id)
            for outcome in OUTCOMES:
                finished.add_metric([endpoint_id, outcome], totals.outcomes.get(outcome, 0) if totals else 0)
            for error_type, count in sorted((totals.failures if totals else {}).items()):
                failures.add_metric([endpoint_id, error_type], count)
            add_histogram(queue_wait, endpoint_id, totals.queue_wait if totals else None)
            add_histogram(run_time, endpoint_id, totals.run_time if totals else None)
        return families

    def _worker_families(self, workers: Sequence[WorkerRecord] | None, now: float) -> list[Metric]:
        count = GaugeMetricFamily(
            "framecast_workers", "Live workers (heartbeat within the worker timeout) by state.", labels=["state"]
        )
        up = GaugeMetricFamily(
            "framecast_worker_up",
            f"1 while the worker's heartbeat is fresh, 0 once it is late (shown for {WORKER_WINDOW_S:g}s of silence).",
            labels=["worker", "state"],
        )
        age = GaugeMetricFamily(
            "framecast_worker_heartbeat_age_seconds", "Seconds since the worker's last heartbeat.", labels=["worker"]
        )
        memory_labels = ["worker", "device"]
        allocated = GaugeMetricFamily(
            "framecast_gpu_memory_allocated_bytes", "GPU memory held by live tensors in the engine process.",
            labels=memory_labels,
        )  # fmt: skip
        reserved = GaugeMetricFamily(
            "framecast_gpu_memory_reserved_bytes", "GPU memory held by the engine process's caching allocator.",
            labels=memory_labels,
        )  # fmt: skip
        total = GaugeMetricFamily("framecast_gpu_memory_total_bytes", "The GPU's whole memory.", labels=memory_labels)
        families: list[Metric] = [count, up, age, allocated, reserved, total]
        if workers is None:
            return families
        live_by_state = dict.fromkeys(WORKER_STATES, 0)
        for worker in workers:
            heartbeat_age_s = max(0.0, now - worker.heartbeat_at)
            live = heartbeat_age_s <= self.worker_timeout_s
            up.add_metric([worker.worker_id, worker.state], 1.0 if live else 0.0)
            age.add_metric([worker.worker_id], heartbeat_age_s)
            if not live:
                # Its process is gone, and its memory with it.
                continue
            live_by_state[worker.state] = live_by_state.get(worker.state, 0) + 1
            for device in worker.resources.devices:
                labels = [worker.worker_id, device.device]
                allocated.add_metric(labels, device.allocated_bytes)
                reserved.add_metric(labels, device.reserved_bytes)
                total.add_metric(labels, device.total_bytes)
        for state, workers_in_state in live_by_state.items():
            count.add_metric([state], workers_in_state)
        return families


def add_histogram(family: HistogramMetricFamily, endpoint_id: str, histogram: DurationHistogram | None) -> None:
    if histogram is None:
        family.add_metric([endpoint_id], [("+Inf", 0)], 0.0)
        return
    buckets = [
        (format_bound(bound), count)
        for bound, count in zip(histogram.upper_bounds_s, histogram.cumulative_counts, strict=True)
    ]
    family.add_metric([endpoint_id], [*buckets, ("+Inf", histogram.count)], histogram.sum_s)


def format_bound(bound_s: float) -> str:
    # Prometheus's own clients write 1.0, not 1: the same `le` strings as a client-side histogram's.
    return repr(float(bound_s))


class HttpMetrics:
    """This replica's HTTP requests, by route template (never the raw path: bounded labels, no ids)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "framecast_http_requests",
            "HTTP requests this replica answered.",
            ["method", "route", "status_code"],
            registry=registry,
        )
        self.duration = Histogram(
            "framecast_http_request_duration_seconds",
            "Time from request to the end of the response (SSE streams and /run included).",
            ["method", "route"],
            buckets=HTTP_BUCKETS_S,
            registry=registry,
        )

    def observe(self, *, method: str, route: str | None, status_code: int, duration_s: float) -> None:
        """`route`: the matched route's template (/queue/{app:path}/requests/{request_id}); None when none matched."""
        method = method if method in HTTP_METHODS else "OTHER"
        template = route or UNMATCHED_ROUTE
        self.requests.labels(method, template, str(status_code)).inc()
        self.duration.labels(method, template).observe(duration_s)


class Metrics:
    """One replica's registry: the cluster collector, its HTTP metrics and its process (CPU, memory, files)."""

    def __init__(
        self,
        *,
        statistics: JobStatistics,
        store: JobStore,
        endpoint_ids: Sequence[str],
        worker_timeout_s: float,
    ) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(
            ClusterCollector(
                statistics=statistics, store=store, endpoint_ids=endpoint_ids, worker_timeout_s=worker_timeout_s
            )
        )
        ProcessCollector(registry=self.registry)
        self.http = HttpMetrics(self.registry)

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """(body, content type): the Prometheus text format, or OpenMetrics when `accept` asks for it.

        Blocking (it reads the database): call it from a worker thread.
        """
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
