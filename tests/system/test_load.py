"""The load test's short tier: the driver of `scripts/load-test` with small numbers, asserting correctness only."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.system.cluster import log_problems
from tests.system.load import LoadConfig, run_load, start_server

pytestmark = pytest.mark.e2e


def test_concurrent_clients_and_pollers_get_every_job_completed_without_an_error(
    tmp_path: Path, system_tiny_models: Path
) -> None:
    config = LoadConfig(jobs=40, clients=10, pollers=20, poll_hz=10, timeout_s=240)
    server = start_server(tmp_path, system_tiny_models, workers=2)
    try:
        report = run_load(server, config)
    finally:
        server.stop()
    report.server_log_problems = log_problems(server.log_text())
    print(report.render())

    assert report.problems() == []
    assert report.errors == {}
    assert report.submitted == report.completed == config.jobs
    # Every job was seen by a poller until COMPLETED, and every answered call was timed.
    assert report.status_calls >= config.jobs
    assert report.status_latency.count == report.status_calls
