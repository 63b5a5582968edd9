"""The chaos test's short tier: the driver of `scripts/chaos-test` with small numbers, asserting correctness only."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.system.chaos import ChaosConfig, run_chaos

pytestmark = pytest.mark.e2e


def test_sigkilled_api_and_workers_lose_no_job_double_no_output_and_deliver_every_webhook(
    tmp_path: Path, system_tiny_models: Path, system_certificates: tuple[Path, Path, Path]
) -> None:
    config = ChaosConfig(jobs=12, seed=7, min_kills=3, kill_interval_s=(0.5, 2.0), timeout_s=240, settle_timeout_s=120)
    report = run_chaos(tmp_path, system_tiny_models, system_certificates, config)
    print(report.render())

    assert report.problems() == []
    assert report.jobs_submitted == report.jobs_completed == config.jobs
    assert report.undelivered == []
    # The chaos happened: kills come in blocks of one API and two worker kills, and at least one kill took a
    # running job away from its worker, which then ran again elsewhere.
    assert report.api_kills >= 1
    assert report.worker_kills >= 2
    assert any(attempts > 1 for attempts in report.attempts)
