"""Cluster-wide job statistics for `GET /metrics`, read from the jobs table (SQLite and PostgreSQL alike).

The numbers come from the one database every replica and worker shares, so any API replica answers the
same, and nothing is lost when a replica dies.

What a call costs:
- Active jobs (queued and running per endpoint, the oldest queued job): the IN_QUEUE and IN_PROGRESS rows,
  found through the queue index (`ix_jobs_queue`, status first). O(active jobs).
- Finished jobs (outcome counters, duration histograms): recounting the whole table on every scrape would
  grow with its history (seconds per million jobs), so `SqlJobStatistics` keeps a running tally instead.
  Each call reads the rows added since its last call (a primary-key range on `seq`) and looks up by
  primary key the rows it saw active that are active no longer. O(new jobs + jobs that finished). The
  tally is exact because a COMPLETED job never changes.
- The first call of a process counts the table's history with one aggregate query (a full scan, a few
  seconds per million jobs; docs/operations.md has measurements), all but the newest `CATCH_UP_MARGIN_ROWS`
  rows, which it reads one by one like any later call.

Commit order: on PostgreSQL a job can commit after another with a larger `seq` (sequences are not
transactional). A `seq` missing below the largest one read is remembered as a gap and looked up again on
each call, until it appears or `GAP_SETTLE_S` has passed (a rolled-back insert leaves a gap for good).
"""

from __future__ import annotations

import bisect
import itertools
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from framecast.store.database import SqlDatabase, jobs
from framecast.store.jobs import JobStatus

# Upper bounds of the duration histogram buckets, in seconds: queue waits of a moment to videos of an hour.
DURATION_BUCKETS_S = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
# How long a missing `seq` may still turn up (an insert not yet committed); see the module docstring.
GAP_SETTLE_S = 300.0
# A larger jump in `seq` is not a commit in flight (a sequence moved by hand, ids cached by a crashed server).
MAX_GAP_ROWS = 1000
READ_BATCH_ROWS = 5000
# The first call counts in SQL every row but this many newest ones, which may still have commits in flight.
CATCH_UP_MARGIN_ROWS = 1000
LOOKUP_BATCH_ROWS = 500
# Keeps the error_type label bounded whatever an upstream server puts there.
MAX_ERROR_TYPES_PER_ENDPOINT = 32
ERROR_TYPE_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")
OTHER_ERROR_TYPE = "other"
UNKNOWN_ERROR_TYPE = "unknown"

# The outcome of a finished job, by its status code.
OK = "ok"
CANCELLED = "cancelled"
CLIENT_ERROR = "client_error"
SERVER_ERROR = "server_error"
OUTCOMES = (OK, CANCELLED, CLIENT_ERROR, SERVER_ERROR)

ACTIVE_STATUSES = (JobStatus.IN_QUEUE.value, JobStatus.IN_PROGRESS.value)
_COLUMNS = (
    jobs.c.seq,
    jobs.c.endpoint_id,
    jobs.c.status,
    jobs.c.created_at,
    jobs.c.started_at,
    jobs.c.finished_at,
    jobs.c.outcome_status_code,
    jobs.c.error_type,
)


def outcome_of(status_code: int | None) -> str:
    """ok (2xx), cancelled (499, as fal's client_cancelled), client_error (other 4xx), server_error (the rest)."""
    if status_code is not None and 200 <= status_code < 300:
        return OK
    if status_code == 499:
        return CANCELLED
    if status_code is not None and 400 <= status_code < 500:
        return CLIENT_ERROR
    return SERVER_ERROR


@dataclass(frozen=True)
class DurationHistogram:
    """Prometheus-style: `cumulative_counts[i]` observations were at most `upper_bounds_s[i]` seconds."""

    upper_bounds_s: tuple[float, ...]
    cumulative_counts: tuple[int, ...]
    count: int
    sum_s: float


@dataclass(frozen=True)
class EndpointTotals:
    """Every finished job of one endpoint the table holds."""

    # outcome (OUTCOMES) -> jobs
    outcomes: Mapping[str, int]
    # error_type -> jobs, over every outcome but ok; error types past MAX_ERROR_TYPES_PER_ENDPOINT are "other".
    failures: Mapping[str, int]
    # Created to first started, for the jobs that started.
    queue_wait: DurationHistogram
    # First started to finished (retries included), for the jobs that started.
    run_time: DurationHistogram


@dataclass(frozen=True)
class ActiveJobs:
    queued: int = 0
    running: int = 0
    # created_at (Unix seconds) of the oldest IN_QUEUE job; None when none is queued.
    oldest_queued_at: float | None = None


@dataclass(frozen=True)
class JobSnapshot:
    # endpoint_id -> its queued and running jobs; endpoints with none are absent.
    active: Mapping[str, ActiveJobs]
    # endpoint_id -> its finished jobs; endpoints with none are absent.
    finished: Mapping[str, EndpointTotals]


class JobStatistics(Protocol):
    def snapshot(self) -> JobSnapshot:
        """The active jobs now and the totals of every finished job. Safe to call from several threads.

        Totals never decrease within one instance (they are Prometheus counters).
        """
        ...


class _Histogram:
    def __init__(self, upper_bounds_s: tuple[float, ...]) -> None:
        self.upper_bounds_s = upper_bounds_s
        self.bucket_counts = [0] * len(upper_bounds_s)
        self.count = 0
        self.sum_s = 0.0

    def observe(self, value_s: float) -> None:
        # Clocks of different machines can put a start before its submit: never a negative duration.
        value_s = max(0.0, value_s)
        index = bisect.bisect_left(self.upper_bounds_s, value_s)
        if index < len(self.bucket_counts):
            self.bucket_counts[index] += 1
        self.count += 1
        self.sum_s += value_s

    def add_counted(self, cumulative_counts: Sequence[int], count: int, sum_s: float) -> None:
        """Observations counted elsewhere (in SQL): `cumulative_counts[i]` at most `upper_bounds_s[i]`."""
        previous = 0
        for index, cumulative in enumerate(cumulative_counts):
            self.bucket_counts[index] += cumulative - previous
            previous = cumulative
        self.count += count
        self.sum_s += sum_s

    def freeze(self) -> DurationHistogram:
        return DurationHistogram(
            self.upper_bounds_s, tuple(itertools.accumulate(self.bucket_counts)), self.count, self.sum_s
        )


class _EndpointTally:
    def __init__(self, upper_bounds_s: tuple[float, ...]) -> None:
        self.outcomes: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.queue_wait = _Histogram(upper_bounds_s)
        self.run_time = _Histogram(upper_bounds_s)

    def add(self, row: Any) -> None:
        self.add_outcomes(row.outcome_status_code, row.error_type, 1)
        if row.started_at is not None:
            self.queue_wait.observe(row.started_at - row.created_at)
            if row.finished_at is not None:
                self.run_time.observe(row.finished_at - row.started_at)

    def add_outcomes(self, status_code: int | None, error_type: str | None, jobs_count: int) -> None:
        outcome = outcome_of(status_code)
        self.outcomes[outcome] += jobs_count
        if outcome != OK:
            self.failures[self.error_label(error_type)] += jobs_count

    def error_label(self, error_type: str | None) -> str:
        if error_type is None:
            return UNKNOWN_ERROR_TYPE
        if not ERROR_TYPE_PATTERN.fullmatch(error_type):
            return OTHER_ERROR_TYPE
        if error_type not in self.failures and len(self.failures) >= MAX_ERROR_TYPES_PER_ENDPOINT:
            return OTHER_ERROR_TYPE
        return error_type

    def freeze(self) -> EndpointTotals:
        return EndpointTotals(
            outcomes=dict(self.outcomes),
            failures=dict(self.failures),
            queue_wait=self.queue_wait.freeze(),
            run_time=self.run_time.freeze(),
        )


class SqlJobStatistics:
    """`JobStatistics` over the jobs table, with a running tally of finished jobs (see the module docstring).

    One instance per process; its tally lives as long as it does.
    """

    def __init__(
        self,
        database: SqlDatabase,
        *,
        upper_bounds_s: Sequence[float] = DURATION_BUCKETS_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.database = database
        self.upper_bounds_s = tuple(sorted(upper_bounds_s))
        self.clock = clock
        self._lock = threading.Lock()
        # Every job with seq <= _settled_seq is tallied, in _open (seen active), or in _gaps (not seen yet).
        self._settled_seq = 0
        self._open: set[int] = set()
        # seq -> when it was first found missing (clock)
        self._gaps: dict[int, float] = {}
        self._tallies: dict[str, _EndpointTally] = {}

    def snapshot(self) -> JobSnapshot:
        with self._lock, self.database.read() as connection:
            now = self.clock()
            active_rows = connection.execute(
                sa.select(jobs.c.seq, jobs.c.endpoint_id, jobs.c.status, jobs.c.created_at).where(
                    jobs.c.status.in_(ACTIVE_STATUSES)
                )
            ).all()
            if self._settled_seq == 0:
                self._catch_up(connection)
            self._read_new(connection, now)
            self._look_up_again(connection, {row.seq for row in active_rows}, now)
            return JobSnapshot(
                active=_active_by_endpoint(active_rows),
                finished={endpoint_id: tally.freeze() for endpoint_id, tally in sorted(self._tallies.items())},
            )

    def _catch_up(self, connection: Connection) -> None:
        """Count the history in one aggregate query: all rows but the newest CATCH_UP_MARGIN_ROWS.

        One statement, so one snapshot even under READ COMMITTED: each row is counted as finished or kept
        as active (a group of its own), never both, never neither.
        """
        newest = connection.execute(sa.select(sa.func.max(jobs.c.seq))).scalar()
        upto = (newest or 0) - CATCH_UP_MARGIN_ROWS
        if upto <= 0:
            return
        completed = jobs.c.status == sa.literal_column(f"'{JobStatus.COMPLETED.value}'")
        # A literal, not a parameter: PostgreSQL matches a GROUP BY expression to the SELECT's textually.
        open_seq = sa.case((completed, sa.null()), else_=jobs.c.seq)
        waited = jobs.c.started_at - jobs.c.created_at
        ran = jobs.c.finished_at - jobs.c.started_at
        started = jobs.c.started_at.is_not(None)
        ran_known = sa.and_(started, jobs.c.finished_at.is_not(None))

        def histogram_columns(duration: Any, observed: Any) -> list[Any]:
            at_most = [
                sa.func.sum(sa.case((sa.and_(observed, duration <= bound_s), 1), else_=0))
                for bound_s in self.upper_bounds_s
            ]
            clamped = sa.case((duration < 0, 0.0), else_=duration)
            return [
                *at_most,
                sa.func.sum(sa.case((observed, 1), else_=0)),
                sa.func.sum(sa.case((observed, clamped), else_=0.0)),
            ]

        query = (
            sa.select(
                jobs.c.endpoint_id,
                jobs.c.outcome_status_code,
                jobs.c.error_type,
                open_seq,
                sa.func.count(),
                sa.func.min(jobs.c.seq),
                *histogram_columns(waited, started),
                *histogram_columns(ran, ran_known),
            )
            .where(jobs.c.seq <= upto)
            .group_by(jobs.c.endpoint_id, jobs.c.outcome_status_code, jobs.c.error_type, open_seq)
        )
        bounds = len(self.upper_bounds_s)
        groups = connection.execute(query).all()
        # In order of first appearance, so the error types that keep their names are those a row-by-row
        # count would have kept.
        for group in sorted(groups, key=lambda group: group[5]):
            endpoint_id, status_code, error_type, seq, jobs_count = group[:5]
            if seq is not None:
                self._open.add(seq)
                continue
            tally = self._tally(endpoint_id)
            tally.add_outcomes(status_code, error_type, jobs_count)
            waits, runs = group[6 : 6 + bounds + 2], group[6 + bounds + 2 :]
            for histogram, counted in ((tally.queue_wait, waits), (tally.run_time, runs)):
                histogram.add_counted(
                    [int(count) for count in counted[:bounds]], int(counted[bounds]), float(counted[-1])
                )
        self._settled_seq = upto

    def _read_new(self, connection: Connection, now: float) -> None:
        while True:
            rows = connection.execute(
                sa.select(*_COLUMNS).where(jobs.c.seq > self._settled_seq).order_by(jobs.c.seq).limit(READ_BATCH_ROWS)
            ).all()
            for row in rows:
                missing = row.seq - self._settled_seq - 1
                if 0 < missing <= MAX_GAP_ROWS and row.created_at >= now - GAP_SETTLE_S:
                    for seq in range(self._settled_seq + 1, row.seq):
                        self._gaps[seq] = now
                self._take(row)
                self._settled_seq = row.seq
            if len(rows) < READ_BATCH_ROWS:
                return

    def _look_up_again(self, connection: Connection, active_seqs: set[int], now: float) -> None:
        """Rows seen active that are active no longer (finished, or deleted), and the gaps."""
        candidates = sorted((self._open - active_seqs) | self._gaps.keys())
        for batch in _batches(candidates, LOOKUP_BATCH_ROWS):
            found = set()
            for row in connection.execute(sa.select(*_COLUMNS).where(jobs.c.seq.in_(batch))):
                found.add(row.seq)
                self._gaps.pop(row.seq, None)
                self._open.discard(row.seq)
                self._take(row)
            for seq in set(batch) - found:
                self._open.discard(seq)
                if seq in self._gaps and self._gaps[seq] < now - GAP_SETTLE_S:
                    del self._gaps[seq]

    def _take(self, row: Any) -> None:
        if row.status == JobStatus.COMPLETED.value:
            self._tally(row.endpoint_id).add(row)
        else:
            self._open.add(row.seq)

    def _tally(self, endpoint_id: str) -> _EndpointTally:
        tally = self._tallies.get(endpoint_id)
        if tally is None:
            tally = self._tallies[endpoint_id] = _EndpointTally(self.upper_bounds_s)
        return tally


def _active_by_endpoint(rows: Iterable[Any]) -> dict[str, ActiveJobs]:
    queued: Counter[str] = Counter()
    running: Counter[str] = Counter()
    oldest: dict[str, float] = {}
    for row in rows:
        if row.status == JobStatus.IN_QUEUE.value:
            queued[row.endpoint_id] += 1
            oldest[row.endpoint_id] = min(oldest.get(row.endpoint_id, row.created_at), row.created_at)
        else:
            running[row.endpoint_id] += 1
    return {
        endpoint_id: ActiveJobs(queued[endpoint_id], running[endpoint_id], oldest.get(endpoint_id))
        for endpoint_id in sorted(queued.keys() | running.keys())
    }


def _batches(values: Sequence[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(values), size):
        yield list(values[start : start + size])
