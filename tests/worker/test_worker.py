"""The Worker's own bookkeeping, with a real job store and no engine process."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from framecast.logs import REQUEST_ID, WORKER_ID
from framecast.store.blobs import LocalBlobStore
from framecast.store.jobs import ClaimedJob, DeviceMemory, JobStatus, NewJob, WorkerResources
from framecast.store.sql_jobs import SqlJobStore
from framecast.worker.worker import Worker, WorkerConfig, reported_resources

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


def make_worker(tmp_path: Path, store: SqlJobStore) -> Worker:
    return Worker(
        store=store,
        blobs=LocalBlobStore(tmp_path / "files"),
        bindings=[],
        config=WorkerConfig(
            lease_s=30, cancel_grace_s=1, poll_interval_s=0.05, max_image_pixels=10**6, tmp_dir=tmp_path
        ),
    )


def test_the_heartbeat_carries_the_engines_latest_memory_report(tmp_path: Path) -> None:
    store = SqlJobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    worker = make_worker(tmp_path, store)
    worker.report()
    [record] = store.list_workers(alive_after=0)
    assert record.resources == WorkerResources(), "nothing reported yet"
    device = {"device": "cuda:0", "allocated_bytes": 1, "reserved_bytes": 2, "total_bytes": 3}
    worker.resources = reported_resources({"type": "resources", "devices": [device]})
    worker.report()
    [record] = store.list_workers(alive_after=0)
    assert record.resources == WorkerResources(devices=(DeviceMemory("cuda:0", 1, 2, 3),))
    store.close()


def test_lines_logged_while_a_job_runs_name_it_and_the_worker(tmp_path: Path) -> None:
    store = SqlJobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    worker = make_worker(tmp_path, store)
    request_id = str(uuid.uuid4())
    store.create_job(NewJob(request_id=request_id, endpoint_id=ENDPOINT, payload={}, max_attempts=3))
    seen: list[tuple[str | None, str | None]] = []

    def run_job(_claimed: ClaimedJob) -> None:
        seen.append((REQUEST_ID.get(), WORKER_ID.get()))
        worker.stop_event.set()

    worker.run_job = run_job  # type: ignore[method-assign]
    worker.start_engine = lambda: True  # type: ignore[method-assign]
    worker.endpoint_ids = (ENDPOINT,)
    worker.run_forever()
    assert seen == [(request_id, worker.worker_id)]
    assert (REQUEST_ID.get(), WORKER_ID.get()) == (None, None), "nothing leaks out of the worker's run"
    store.close()


def test_an_engine_process_that_died_between_jobs_is_restarted_before_the_next_claim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqlJobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    worker = make_worker(tmp_path, store)

    class DeadProcess:
        def is_alive(self) -> bool:
            return False

    class DeadEngine:
        process = DeadProcess()
        killed = False

        def describe_exit(self) -> str:
            return "The model process was killed by signal SIGKILL"

        def kill(self) -> None:
            DeadEngine.killed = True

    starts: list[str] = []

    def start_engine() -> bool:
        if not starts:
            starts.append("first")
            worker.engine = DeadEngine()  # type: ignore[assignment]
        else:
            starts.append("restart")
            worker.engine = None
            worker.stop_event.set()
        return True

    monkeypatch.setattr(worker, "start_engine", start_engine)
    worker.serve_jobs()
    assert starts == ["first", "restart"], "the dead engine process was replaced without a job failing"
    assert DeadEngine.killed
    store.close()
