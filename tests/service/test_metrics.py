"""The cluster collector on its own: what registering costs, and what a failed database read gives."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from framecast.service.metrics import Metrics
from framecast.store.sql_jobs import SqlJobStore
from framecast.store.statistics import JobSnapshot


class BrokenStatistics:
    def __init__(self) -> None:
        self.calls = 0

    def snapshot(self) -> JobSnapshot:
        self.calls += 1
        raise ConnectionError("the database is gone")


def values(metrics: Metrics) -> dict[str, float]:
    text = generate_latest(metrics.registry).decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("framecast_") and not sample.labels
    }


def test_a_failed_read_is_logged_and_reported_and_the_replica_metrics_still_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    statistics = BrokenStatistics()
    metrics = Metrics(
        statistics=statistics,
        store=SqlJobStore(f"sqlite:///{tmp_path / 'jobs.db'}"),
        endpoint_ids=["fal-ai/wan-i2v"],
        worker_timeout_s=30,
    )
    assert statistics.calls == 0, "registering the collector reads nothing"
    metrics.http.observe(method="GET", route="/health", status_code=200, duration_s=0.01)
    with caplog.at_level(logging.ERROR, logger="framecast.metrics"):
        found = values(metrics)
    assert statistics.calls == 1
    assert found["framecast_cluster_statistics_up"] == 0
    assert "framecast_queue_depth" not in found
    assert "could not read the cluster statistics" in caplog.text
    body, content_type = metrics.render(None)
    assert b'framecast_http_requests_total{method="GET",route="/health",status_code="200"} 1.0' in body
    assert content_type.startswith("text/plain")


def test_odd_methods_share_one_label(tmp_path: Path) -> None:
    metrics = Metrics(
        statistics=BrokenStatistics(),
        store=SqlJobStore(f"sqlite:///{tmp_path / 'jobs.db'}"),
        endpoint_ids=[],
        worker_timeout_s=30,
    )
    for method in ("BREW", "PROPFIND", "GET"):
        metrics.http.observe(method=method, route=None, status_code=405, duration_s=0.0)
    body = metrics.http.requests.collect()[0].samples
    counts = {sample.labels["method"]: sample.value for sample in body if sample.name.endswith("_total")}
    assert counts == {"OTHER": 2, "GET": 1}
