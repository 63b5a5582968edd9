"""`JobStatistics` contract, on every database dialect (the `database` fixture).

The totals must count each finished job exactly once, however the calls interleave with the jobs'
lives, and agree with a fresh instance that reads the table from scratch (another replica).
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from framecast.store import statistics as statistics_module
from framecast.store.database import SqlDatabase, jobs
from framecast.store.jobs import JobOutcome, JobRecord, JobStatus, NewJob, error_outcome
from framecast.store.sql_jobs import SqlJobStore
from framecast.store.statistics import (
    CANCELLED,
    CLIENT_ERROR,
    GAP_SETTLE_S,
    MAX_ERROR_TYPES_PER_ENDPOINT,
    OK,
    SERVER_ERROR,
    EndpointTotals,
    JobSnapshot,
    SqlJobStatistics,
    outcome_of,
)

WAN = "fal-ai/wan-i2v"
LTX = "fal-ai/ltx-video"
BOUNDS_S = (1.0, 10.0, 100.0)


@pytest.fixture
def store(database: SqlDatabase) -> SqlJobStore:
    return SqlJobStore(database)


def submit(store: SqlJobStore, endpoint_id: str = WAN) -> JobRecord:
    return store.create_job(NewJob(request_id=str(uuid.uuid4()), endpoint_id=endpoint_id, payload={}))


def run(
    store: SqlJobStore,
    record: JobRecord,
    outcome: JobOutcome,
    *,
    queued_s: float,
    ran_s: float,
    worker_id: str = "w",
) -> None:
    """Claim `record` `queued_s` after its submit and finish it `ran_s` later."""
    started_at = record.created_at + queued_s
    claimed = store.claim_job(worker_id=worker_id, endpoint_ids=[record.endpoint_id], lease_s=3600, now=started_at)
    assert claimed is not None and claimed.record.request_id == record.request_id
    assert store.complete_job(record.request_id, claimed.lease_token, outcome, now=started_at + ran_s)


def ok() -> JobOutcome:
    return JobOutcome(200, {"video": {}}, inference_time_s=1.0)


def comparable(snapshot: JobSnapshot) -> dict[str, EndpointTotals]:
    return dict(snapshot.finished)


@pytest.mark.parametrize(
    ("status_code", "outcome"),
    [(200, OK), (201, OK), (499, CANCELLED), (422, CLIENT_ERROR), (400, CLIENT_ERROR), (500, SERVER_ERROR),
     (503, SERVER_ERROR), (504, SERVER_ERROR), (None, SERVER_ERROR)],
)  # fmt: skip
def test_outcome_of_a_status_code(status_code: int | None, outcome: str) -> None:
    assert outcome_of(status_code) == outcome


def test_an_empty_table_has_nothing(database: SqlDatabase) -> None:
    assert SqlJobStatistics(database).snapshot() == JobSnapshot(active={}, finished={})


def test_queued_and_running_jobs_per_endpoint(store: SqlJobStore, database: SqlDatabase) -> None:
    first, _second, _other = submit(store), submit(store), submit(store, LTX)
    statistics = SqlJobStatistics(database)
    snapshot = statistics.snapshot()
    assert (snapshot.active[WAN].queued, snapshot.active[WAN].running) == (2, 0)
    assert (snapshot.active[LTX].queued, snapshot.active[LTX].running) == (1, 0)
    assert snapshot.active[WAN].oldest_queued_at == first.created_at

    assert store.claim_job(worker_id="w", endpoint_ids=[WAN], lease_s=30, now=time.time()) is not None
    snapshot = statistics.snapshot()
    assert (snapshot.active[WAN].queued, snapshot.active[WAN].running) == (1, 1)
    assert snapshot.active[WAN].oldest_queued_at == _second.created_at
    assert snapshot.finished == {}


def test_finished_jobs_by_outcome_error_type_and_duration(store: SqlJobStore, database: SqlDatabase) -> None:
    statistics = SqlJobStatistics(database, upper_bounds_s=BOUNDS_S)
    run(store, submit(store), ok(), queued_s=0.5, ran_s=5.0)
    run(store, submit(store), ok(), queued_s=20.0, ran_s=50.0)
    run(store, submit(store), error_outcome(500, "boom", "runner_server_error"), queued_s=2.0, ran_s=500.0)
    run(store, submit(store), error_outcome(422, "flagged", "content_policy_violation"), queued_s=1.0, ran_s=1.0)
    cancelled_in_queue = submit(store)
    store.request_cancel(cancelled_in_queue.request_id, now=time.time())

    snapshot = statistics.snapshot()
    assert snapshot.active == {}
    totals = snapshot.finished[WAN]
    assert totals.outcomes == {OK: 2, SERVER_ERROR: 1, CLIENT_ERROR: 1, CANCELLED: 1}
    assert totals.failures == {"runner_server_error": 1, "content_policy_violation": 1, "client_cancelled": 1}
    # The job cancelled in the queue never started: it has no queue wait and no run time.
    assert totals.queue_wait.upper_bounds_s == BOUNDS_S
    assert (totals.queue_wait.cumulative_counts, totals.queue_wait.count) == ((2, 3, 4), 4)
    assert totals.queue_wait.sum_s == pytest.approx(23.5)
    assert (totals.run_time.cumulative_counts, totals.run_time.count) == ((1, 2, 3), 4)
    assert totals.run_time.sum_s == pytest.approx(556.0)


def test_a_duration_on_a_bucket_bound_counts_in_that_bucket(store: SqlJobStore, database: SqlDatabase) -> None:
    run(store, submit(store), ok(), queued_s=1.0, ran_s=10.0)
    totals = SqlJobStatistics(database, upper_bounds_s=BOUNDS_S).snapshot().finished[WAN]
    assert totals.queue_wait.cumulative_counts == (1, 1, 1)
    assert totals.run_time.cumulative_counts == (0, 1, 1)


def test_totals_grow_by_exactly_the_jobs_finished_since(store: SqlJobStore, database: SqlDatabase) -> None:
    statistics = SqlJobStatistics(database, upper_bounds_s=BOUNDS_S)
    waiting = [submit(store) for _ in range(3)]
    run(store, submit(store, LTX), ok(), queued_s=1, ran_s=1)
    first = statistics.snapshot()
    assert first.finished[LTX].outcomes == {OK: 1}
    assert WAN not in first.finished

    # Jobs seen queued finish, a new one finishes, another stays queued.
    for record in waiting[:2]:
        run(store, record, ok(), queued_s=1, ran_s=1)
    run(store, waiting[2], error_outcome(503, "lost", "runner_disconnected"), queued_s=1, ran_s=1)
    run(store, submit(store), ok(), queued_s=1, ran_s=1)
    submit(store)
    second = statistics.snapshot()
    assert second.finished[WAN].outcomes == {OK: 3, SERVER_ERROR: 1}
    assert second.finished[LTX].outcomes == {OK: 1}
    assert second.active[WAN].queued == 1

    # Nothing new: nothing counted twice.
    assert statistics.snapshot().finished == second.finished
    # Another replica, reading everything at once, agrees.
    assert SqlJobStatistics(database, upper_bounds_s=BOUNDS_S).snapshot().finished == second.finished


def test_requeued_jobs_are_counted_once_when_they_finish(store: SqlJobStore, database: SqlDatabase) -> None:
    statistics = SqlJobStatistics(database)
    record = submit(store)
    claimed = store.claim_job(worker_id="w", endpoint_ids=[WAN], lease_s=1, now=time.time())
    assert claimed is not None
    assert statistics.snapshot().active[WAN].running == 1
    # The worker is lost: back in the queue, then run again to the end.
    report = store.reap(now=time.time() + 5, is_worker_alive=lambda _worker: False)
    assert report.requeued == [record.request_id]
    assert statistics.snapshot().active[WAN].queued == 1
    run(store, record, ok(), queued_s=1, ran_s=1, worker_id="w2")
    assert statistics.snapshot().finished[WAN].outcomes == {OK: 1}
    assert statistics.snapshot().finished[WAN].outcomes == {OK: 1}


def test_reading_in_batches_counts_the_same(
    store: SqlJobStore, database: SqlDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [submit(store) for _ in range(11)]
    for record in records[:7]:
        run(store, record, ok(), queued_s=1, ran_s=1)
    expected = SqlJobStatistics(database).snapshot()
    monkeypatch.setattr(statistics_module, "READ_BATCH_ROWS", 3)
    monkeypatch.setattr(statistics_module, "LOOKUP_BATCH_ROWS", 2)
    statistics = SqlJobStatistics(database)
    assert statistics.snapshot() == expected
    for record in records[7:]:
        run(store, record, ok(), queued_s=1, ran_s=1)
    assert statistics.snapshot().finished[WAN].outcomes == {OK: 11}


def test_error_types_are_bounded_and_sanitised(store: SqlJobStore, database: SqlDatabase) -> None:
    names = [f"upstream_kind_{index}" for index in range(MAX_ERROR_TYPES_PER_ENDPOINT + 5)]
    for name in [*names, "Not A Label!", None]:
        outcome = JobOutcome(502, {"detail": "x"}, error="x", error_type=name)
        run(store, submit(store), outcome, queued_s=1, ran_s=1)
    failures = SqlJobStatistics(database).snapshot().finished[WAN].failures
    # The first types seen keep their names; later ones and the one that is no label name are "other".
    assert set(failures) == {*names[:MAX_ERROR_TYPES_PER_ENDPOINT], "other", "unknown"}
    assert (failures["other"], failures["unknown"]) == (5 + 1, 1)
    assert all(failures[name] == 1 for name in names[:MAX_ERROR_TYPES_PER_ENDPOINT])


def insert_row(database: SqlDatabase, seq: int, *, status: JobStatus, created_at: float) -> None:
    """A job row with a chosen seq, as a transaction that committed late would leave it."""
    finished = status is JobStatus.COMPLETED
    with database.write() as connection:
        connection.execute(
            jobs.insert().values(
                seq=seq,
                request_id=str(uuid.uuid4()),
                endpoint_id=WAN,
                status=status.value,
                priority=1,
                payload="{}",
                created_at=created_at,
                started_at=created_at + 1 if finished else None,
                finished_at=created_at + 2 if finished else None,
                attempts=1 if finished else 0,
                max_attempts=3,
                outcome_status_code=200 if finished else None,
            )
        )


def test_a_job_that_commits_after_a_later_one_is_still_counted(database: SqlDatabase) -> None:
    now = time.time()
    clock = itertools.count(now)
    statistics = SqlJobStatistics(database, clock=lambda: next(clock))
    insert_row(database, 1, status=JobStatus.COMPLETED, created_at=now)
    insert_row(database, 3, status=JobStatus.COMPLETED, created_at=now)
    assert statistics.snapshot().finished[WAN].outcomes == {OK: 2}
    # seq 2 was taken before seq 3 but commits after it (PostgreSQL sequences are not transactional).
    insert_row(database, 2, status=JobStatus.IN_QUEUE, created_at=now)
    snapshot = statistics.snapshot()
    assert snapshot.active[WAN].queued == 1
    with database.write() as connection:
        connection.execute(
            jobs.update()
            .where(jobs.c.seq == 2)
            .values(status="COMPLETED", started_at=now + 1, finished_at=now + 2, outcome_status_code=200)
        )
    assert statistics.snapshot().finished[WAN].outcomes == {OK: 3}
    assert SqlJobStatistics(database).snapshot().finished == statistics.snapshot().finished


def test_a_gap_that_never_fills_is_forgotten(database: SqlDatabase) -> None:
    now = time.time()
    times = iter([now, now + GAP_SETTLE_S / 2, now + GAP_SETTLE_S + 1])
    statistics = SqlJobStatistics(database, clock=lambda: next(times))
    insert_row(database, 1, status=JobStatus.COMPLETED, created_at=now)
    insert_row(database, 4, status=JobStatus.COMPLETED, created_at=now)
    statistics.snapshot()
    assert set(statistics._gaps) == {2, 3}, "seqs 2 and 3 may still commit"
    statistics.snapshot()
    assert set(statistics._gaps) == {2, 3}
    # A rolled-back insert leaves its seq unused for good: looking for it stops.
    assert statistics.snapshot().finished[WAN].outcomes == {OK: 2}
    assert statistics._gaps == {}


def test_old_gaps_are_not_waited_for(database: SqlDatabase) -> None:
    long_ago = time.time() - 10 * GAP_SETTLE_S
    insert_row(database, 1, status=JobStatus.COMPLETED, created_at=long_ago)
    insert_row(database, 9, status=JobStatus.COMPLETED, created_at=long_ago)
    statistics = SqlJobStatistics(database)
    assert statistics.snapshot().finished[WAN].outcomes == {OK: 2}
    assert statistics._gaps == {}


def test_a_deleted_job_is_dropped_without_error(store: SqlJobStore, database: SqlDatabase) -> None:
    statistics = SqlJobStatistics(database)
    record = submit(store)
    assert statistics.snapshot().active[WAN].queued == 1
    with database.write() as connection:
        connection.execute(jobs.delete().where(jobs.c.request_id == record.request_id))
    assert statistics.snapshot() == JobSnapshot(active={}, finished={})
    assert statistics._open == set()


def test_totals_are_exact_while_jobs_run_concurrently(store: SqlJobStore, database: SqlDatabase) -> None:
    """Snapshots taken while other threads submit, claim and finish jobs never count a job twice or miss it."""
    statistics = SqlJobStatistics(database)
    stop = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def scrape() -> None:
        try:
            while not stop.is_set():
                totals = statistics.snapshot().finished.get(WAN)
                seen.append(sum(totals.outcomes.values()) if totals else 0)
        except BaseException as error:  # reported below
            errors.append(error)

    def produce(count: int) -> None:
        try:
            for _ in range(count):
                submit(store)
                # On PostgreSQL, SKIP LOCKED passes over rows another thread is claiming right now, so a claim
                # may find nothing for a moment; every producer's own job keeps one claimable, so retry.
                deadline = time.monotonic() + 30
                claimed = None
                while claimed is None and time.monotonic() < deadline:
                    claimed = store.claim_job(worker_id="w", endpoint_ids=[WAN], lease_s=60, now=time.time())
                assert claimed is not None
                store.complete_job(claimed.record.request_id, claimed.lease_token, ok(), now=time.time())
        except BaseException as error:
            errors.append(error)

    scraper = threading.Thread(target=scrape)
    producers = [threading.Thread(target=produce, args=(15,)) for _ in range(3)]
    scraper.start()
    for producer in producers:
        producer.start()
    for producer in producers:
        producer.join()
    stop.set()
    scraper.join()
    assert errors == []
    assert seen == sorted(seen), "a counter never goes down"
    final = statistics.snapshot()
    assert final.finished[WAN].outcomes == {OK: 45}
    assert SqlJobStatistics(database).snapshot().finished == final.finished
    with database.read() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(jobs)).scalar_one() == 45


def assert_same_totals(found: JobSnapshot, expected: JobSnapshot) -> None:
    """Equal, but for float sums added up in another order."""
    assert found.active == expected.active
    assert found.finished.keys() == expected.finished.keys()
    for endpoint_id, totals in found.finished.items():
        wanted = expected.finished[endpoint_id]
        assert (totals.outcomes, totals.failures) == (wanted.outcomes, wanted.failures)
        for histogram, other in ((totals.queue_wait, wanted.queue_wait), (totals.run_time, wanted.run_time)):
            assert (histogram.cumulative_counts, histogram.count) == (other.cumulative_counts, other.count)
            assert histogram.sum_s == pytest.approx(other.sum_s)


def test_the_first_call_counts_history_in_sql_as_row_by_row(
    store: SqlJobStore, database: SqlDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"kind_{index}" for index in range(MAX_ERROR_TYPES_PER_ENDPOINT + 2)]
    kept_open = []
    for index, error_type in enumerate([*names, None, "Bad Label", *names[:3]]):
        if index % 7 == 3:
            kept_open.append(submit(store, LTX))
        outcome = JobOutcome(200 if index % 5 == 0 else 500 + index % 4, {}, error="e", error_type=error_type)
        run(store, submit(store), outcome, queued_s=index * 0.37, ran_s=index * 11.3)
    store.request_cancel(submit(store).request_id, now=time.time())
    claimed = store.claim_job(worker_id="w", endpoint_ids=[LTX], lease_s=60, now=time.time())
    assert claimed is not None
    row_by_row = SqlJobStatistics(database, upper_bounds_s=BOUNDS_S).snapshot()

    monkeypatch.setattr(statistics_module, "CATCH_UP_MARGIN_ROWS", 3)
    statistics = SqlJobStatistics(database, upper_bounds_s=BOUNDS_S)
    assert_same_totals(statistics.snapshot(), row_by_row)
    assert row_by_row.active[LTX] == statistics.snapshot().active[LTX]
    assert (row_by_row.active[LTX].queued, row_by_row.active[LTX].running) == (len(kept_open) - 1, 1)

    # The jobs that were active during the catch-up are counted once, when they finish.
    store.complete_job(claimed.record.request_id, claimed.lease_token, ok(), now=time.time())
    for record in kept_open[1:]:
        run(store, record, ok(), queued_s=1, ran_s=1)
    after = statistics.snapshot()
    assert after.finished[LTX].outcomes == {OK: len(kept_open)}
    monkeypatch.setattr(statistics_module, "CATCH_UP_MARGIN_ROWS", 1000)
    assert_same_totals(after, SqlJobStatistics(database, upper_bounds_s=BOUNDS_S).snapshot())
