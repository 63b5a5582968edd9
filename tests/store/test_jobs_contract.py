"""The JobStore contract. Every implementation runs this suite: SqlJobStore on SQLite and on PostgreSQL."""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Iterator

import pytest

from framecast.store.jobs import (
    CancelOutcome,
    EventInput,
    JobOutcome,
    JobStatus,
    JobStore,
    NewJob,
    Priority,
    WorkerEndpoint,
    WorkerRecord,
)
from framecast.store.sql_jobs import SqlJobStore

ENDPOINT = "fal-ai/wan-i2v"
NOW = 1_000_000.0


def always_alive(_worker_id: str) -> bool:
    return True


@pytest.fixture
def store(database_url: str) -> Iterator[JobStore]:
    instance = SqlJobStore(database_url)
    yield instance
    instance.close()


def new_job(priority: Priority = Priority.NORMAL, **overrides: object) -> NewJob:
    values: dict[str, object] = {
        "request_id": str(uuid.uuid4()),
        "endpoint_id": ENDPOINT,
        "payload": {"generation": {"seed": 1}},
        "priority": priority,
        "max_attempts": 2,
    }
    values.update(overrides)
    return NewJob(**values)  # type: ignore[arg-type]


def test_create_and_get(store: JobStore) -> None:
    record = store.create_job(new_job())
    assert record.status is JobStatus.IN_QUEUE
    assert store.get_job(record.request_id) == record
    assert store.get_job("missing") is None
    with pytest.raises(KeyError):
        store.create_job(new_job(request_id=record.request_id))


def test_claim_order_is_priority_then_age(store: JobStore) -> None:
    low = store.create_job(new_job(Priority.LOW))
    first = store.create_job(new_job())
    second = store.create_job(new_job())
    assert [store.queue_position(r) for r in (first, second, low)] == [0, 1, 2]
    claimed = [store.claim_job(worker_id="w", endpoint_ids=[ENDPOINT], lease_s=30, now=NOW) for _ in range(3)]
    assert [c.record.request_id for c in claimed if c] == [first.request_id, second.request_id, low.request_id]
    assert store.claim_job(worker_id="w", endpoint_ids=[ENDPOINT], lease_s=30, now=NOW) is None


def test_claim_only_own_endpoints(store: JobStore) -> None:
    store.create_job(new_job(endpoint_id="fal-ai/other"))
    assert store.claim_job(worker_id="w", endpoint_ids=[ENDPOINT], lease_s=30, now=NOW) is None
    assert store.claim_job(worker_id="w", endpoint_ids=[], lease_s=30, now=NOW) is None


def test_fencing_rejects_a_stale_lease(store: JobStore) -> None:
    store.create_job(new_job())
    claimed = store.claim_job(worker_id="w1", endpoint_ids=[ENDPOINT], lease_s=1, now=NOW)
    assert claimed is not None
    report = store.reap(now=NOW + 2, is_worker_alive=always_alive)
    assert report.requeued == [claimed.record.request_id]
    again = store.claim_job(worker_id="w2", endpoint_ids=[ENDPOINT], lease_s=30, now=NOW + 3)
    assert again is not None and again.lease_token != claimed.lease_token
    outcome = JobOutcome(status_code=200, body={"ok": 1})
    assert not store.complete_job(claimed.record.request_id, claimed.lease_token, outcome, now=NOW + 4)
    assert not store.append_events(claimed.record.request_id, claimed.lease_token, [EventInput("stale")])
    assert not store.renew_lease(claimed.record.request_id, claimed.lease_token, lease_s=30, now=NOW).held
    assert store.complete_job(again.record.request_id, again.lease_token, outcome, now=NOW + 4)
    record = store.get_job(again.record.request_id)
    assert record is not None and record.outcome == outcome and record.attempts == 2
    assert "stale" not in [event.message for event in store.list_events(record.request_id)]


def test_dead_worker_is_reaped_before_its_lease_expires(store: JobStore) -> None:
    store.create_job(new_job())
    claimed = store.claim_job(worker_id="dead", endpoint_ids=[ENDPOINT], lease_s=300, now=NOW)
    assert claimed is not None
    report = store.reap(now=NOW + 1, is_worker_alive=lambda worker_id: worker_id != "dead")
    assert report.requeued == [claimed.record.request_id]


def test_out_of_attempts_fails_with_reason(store: JobStore) -> None:
    record = store.create_job(new_job())
    for attempt in range(2):
        claimed = store.claim_job(worker_id="w", endpoint_ids=[ENDPOINT], lease_s=1, now=NOW + attempt * 10)
        assert claimed is not None
        store.reap(now=NOW + attempt * 10 + 5, is_worker_alive=always_alive)
    final = store.get_job(record.request_id)
    assert final is not None and final.status is JobStatus.COMPLETED
    assert final.outcome is not None and final.outcome.status_code == 503
    assert final.outcome.error_type == "runner_disconnected"
    assert "lost 2 times" in (final.outcome.error or "")


def test_cancel_semantics(store: JobStore) -> None:
    queued = store.create_job(new_job())
    assert store.request_cancel(queued.request_id, now=NOW) is CancelOutcome.CANCELLATION_REQUESTED
    cancelled = store.get_job(queued.request_id)
    assert cancelled is not None and cancelled.outcome is not None and cancelled.outcome.status_code == 499
    assert store.request_cancel(queued.request_id, now=NOW) is CancelOutcome.ALREADY_COMPLETED
    assert store.request_cancel("missing", now=NOW) is CancelOutcome.NOT_FOUND

    running = store.create_job(new_job())
    claimed = store.claim_job(worker_id="w", endpoint_ids=[ENDPOINT], lease_s=30, now=NOW)
    assert claimed is not None
    assert store.request_cancel(running.request_id, now=NOW) is CancelOutcome.CANCELLATION_REQUESTED
    assert store.request_cancel(running.request_id, now=NOW) is CancelOutcome.CANCELLATION_REQUESTED
    assert store.renew_lease(running.request_id, claimed.lease_token, lease_s=30, now=NOW).cancel_requested
    # A cancelled job whose worker vanished is finished as cancelled, not retried.
    report = store.reap(now=NOW + 60, is_worker_alive=always_alive)
    assert report.cancelled == [running.request_id]


def test_start_deadline_expires_in_queue(store: JobStore) -> None:
    record = store.create_job(new_job(start_deadline_at=NOW + 5))
    assert store.claim_job(worker_id="w", endpoint_ids=[ENDPOINT], lease_s=30, now=NOW + 6) is None
    report = store.reap(now=NOW + 6, is_worker_alive=always_alive)
    assert report.expired == [record.request_id]
    final = store.get_job(record.request_id)
    assert final is not None and final.outcome is not None
    assert (final.outcome.status_code, final.outcome.headers["X-Fal-Request-Timeout-Type"]) == (504, "user")


def test_events_and_progress(store: JobStore) -> None:
    record = store.create_job(new_job())
    claimed = store.claim_job(worker_id="w", endpoint_ids=[ENDPOINT], lease_s=30, now=NOW)
    assert claimed is not None
    progress = {"step": 1, "total_steps": 2}
    assert store.append_events(
        record.request_id, claimed.lease_token, [EventInput("a"), EventInput("b", progress=progress)]
    )
    events = store.list_events(record.request_id)
    assert [event.message for event in events][-2:] == ["a", "b"]
    assert [event.message for event in store.list_events(record.request_id, limit=1)] == ["b"]
    current = store.get_job(record.request_id)
    assert current is not None and current.progress == progress


def test_release_does_not_count_an_attempt(store: JobStore) -> None:
    record = store.create_job(new_job())
    claimed = store.claim_job(worker_id="w", endpoint_ids=[ENDPOINT], lease_s=30, now=NOW)
    assert claimed is not None
    assert store.release_job(record.request_id, claimed.lease_token, now=NOW)
    back = store.get_job(record.request_id)
    assert back is not None and back.status is JobStatus.IN_QUEUE and back.attempts == 0


def _claim_all(url: str, worker: str, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store = SqlJobStore(url)
    claimed = []
    while (job := store.claim_job(worker_id=worker, endpoint_ids=[ENDPOINT], lease_s=30, now=NOW)) is not None:
        claimed.append(job.record.request_id)
    results.put(claimed)
    store.close()


def test_concurrent_claims_from_processes_never_duplicate(database_url: str) -> None:
    store = SqlJobStore(database_url)
    created = {store.create_job(new_job()).request_id for _ in range(60)}
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = context.Queue()  # type: ignore[type-arg]
    processes = [context.Process(target=_claim_all, args=(database_url, f"w{i}", results)) for i in range(3)]
    for process in processes:
        process.start()
    claimed = [request_id for _ in processes for request_id in results.get(timeout=60)]
    for process in processes:
        process.join(timeout=60)
    assert len(claimed) == len(set(claimed)) == len(created)
    assert set(claimed) == created
    store.close()


def test_has_queued_job_matches_what_claim_would_take(store: JobStore) -> None:
    assert not store.has_queued_job([ENDPOINT], now=NOW)
    store.create_job(new_job(start_deadline_at=NOW - 1))
    assert not store.has_queued_job([ENDPOINT], now=NOW)
    store.create_job(new_job())
    assert store.has_queued_job([ENDPOINT], now=NOW)
    assert not store.has_queued_job(["fal-ai/other"], now=NOW)
    assert not store.has_queued_job([], now=NOW)


def test_workers_report_their_endpoints_and_age_out(store: JobStore) -> None:
    endpoints = {
        ENDPOINT: WorkerEndpoint("diffusers-wan-i2v", "/models/wan", "cuda:0", "ready"),
        "fal-ai/framepack": WorkerEndpoint("diffusers-framepack", "owner/fp", "cuda:0", "weights_missing", "no"),
    }
    worker = WorkerRecord("host:1:a", (ENDPOINT,), "ready", None, heartbeat_at=NOW, started_at=NOW, endpoints=endpoints)
    store.upsert_worker(worker)
    store.upsert_worker(WorkerRecord("host:2:b", (), "loading", None, heartbeat_at=NOW - 100, started_at=NOW - 100))
    (listed,) = store.list_workers(alive_after=NOW - 10)
    assert listed == worker
    store.upsert_worker(WorkerRecord("host:1:a", (), "error", "gone", heartbeat_at=NOW + 1, started_at=NOW))
    (updated,) = store.list_workers(alive_after=NOW - 10)
    assert (updated.state, updated.error, dict(updated.endpoints)) == ("error", "gone", {})
    store.remove_worker("host:1:a")
    assert store.list_workers(alive_after=NOW - 10) == []


def test_the_upstream_record_is_fenced_and_survives_a_requeue(store: JobStore) -> None:
    store.create_job(new_job())
    claimed = store.claim_job(worker_id="w1", endpoint_ids=[ENDPOINT], lease_s=30, now=NOW)
    assert claimed is not None
    request_id = claimed.record.request_id
    assert claimed.record.upstream is None
    assert store.set_upstream(request_id, claimed.lease_token, {"state": "submitted", "request_id": "up-1"})
    assert not store.set_upstream(request_id, "stale-token", {"state": "forged"})
    store.reap(now=NOW + 31, is_worker_alive=always_alive)
    again = store.claim_job(worker_id="w2", endpoint_ids=[ENDPOINT], lease_s=30, now=NOW + 32)
    assert again is not None and again.record.upstream == {"state": "submitted", "request_id": "up-1"}


def test_list_jobs_is_newest_first_and_per_key(store: JobStore) -> None:
    for index, key in enumerate(["k1", "k2", "k1", None]):
        store.create_job(new_job(submitted_by=key, request_id=f"r{index}"))
    assert [record.request_id for record in store.list_jobs(submitted_by="k1", limit=10)] == ["r2", "r0"]
    assert [record.request_id for record in store.list_jobs(submitted_by=None, limit=3)] == ["r3", "r2", "r1"]
    assert store.list_jobs(submitted_by="nobody", limit=10) == []
