"""The Worker's own bookkeeping, with a real job store and no engine process."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from framecast.store.blobs import LocalBlobStore
from framecast.store.jobs import ClaimedJob, JobStatus, NewJob
from framecast.store.sql_jobs import SqlJobStore
from framecast.worker.worker import Worker, WorkerConfig

ENDPOINT = "fal-ai/wan-i2v"


def test_a_bug_while_running_a_job_fails_that_job_and_keeps_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqlJobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    worker = Worker(
        store=store,
        blobs=LocalBlobStore(tmp_path / "files"),
        bindings=[],
        config=WorkerConfig(
            lease_s=30, cancel_grace_s=1, poll_interval_s=0.05, max_image_pixels=10**6, tmp_dir=tmp_path
        ),
    )
    request_id = str(uuid.uuid4())
    store.create_job(NewJob(request_id=request_id, endpoint_id=ENDPOINT, payload={}, max_attempts=3))
    claimed = store.claim_job(worker_id=worker.worker_id, endpoint_ids=[ENDPOINT], lease_s=30, now=time.time())
    assert claimed is not None

    def broken_run_job(_claimed: ClaimedJob) -> None:
        raise ValueError("a bug")

    restarts: list[bool] = []
    monkeypatch.setattr(worker, "run_job", broken_run_job)
    monkeypatch.setattr(worker, "restart_engine", lambda: restarts.append(True))
    worker.run_claimed(claimed)

    record = store.get_job(request_id)
    assert record is not None and record.status is JobStatus.COMPLETED
    assert record.outcome is not None and record.outcome.status_code == 500
    assert record.outcome.body["error_type"] == "runner_server_error"
    assert "ValueError: a bug" in record.outcome.body["detail"]
    assert restarts == [True], "the engine process starts clean after a worker error"
    store.close()
