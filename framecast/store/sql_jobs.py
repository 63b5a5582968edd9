"""`JobStore` on SQLAlchemy Core: SQLite (WAL) for one machine, PostgreSQL for many.

On PostgreSQL the claim adds `FOR UPDATE SKIP LOCKED` so concurrent workers
never wait on each other. Every way a job finishes goes through `_finish`,
which also writes the job's webhook delivery into the outbox in the same
transaction: a result is never committed without its webhook, nor the reverse.

On PostgreSQL every change someone may be waiting for also sends a notification
in its transaction (`framecast.store.changes`): a job becoming claimable (created,
released, requeued) on the jobs channel with its endpoint id, and a job's news
(any event, which includes a claim and a cancel request, and its end) on the
events channel with its request id.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from framecast.store.changes import EVENTS_CHANNEL, JOBS_CHANNEL, notify
from framecast.store.database import SqlDatabase, job_events, jobs, webhook_deliveries, workers
from framecast.store.jobs import (
    CancelOutcome,
    ClaimedJob,
    EventInput,
    JobEvent,
    JobOutcome,
    JobRecord,
    JobStatus,
    LeaseState,
    NewJob,
    Priority,
    ReapReport,
    WorkerEndpoint,
    WorkerLiveness,
    WorkerRecord,
    WorkerResources,
    error_outcome,
)

CANCELLED_OUTCOME = error_outcome(499, "Request was cancelled by the client", "client_cancelled")
START_TIMEOUT_OUTCOME = error_outcome(
    504,
    "Request could not start before its start timeout",
    "request_timeout",
    headers={"X-Fal-Request-Timeout-Type": "user"},
)


class SqlJobStore:
    """The job store on SQLite or PostgreSQL (chosen by URL)."""

    def __init__(self, database: SqlDatabase | str) -> None:
        self.database = database if isinstance(database, SqlDatabase) else SqlDatabase(database)
        self.url = self.database.url
        self._is_postgres = self.database.is_postgres
        self._write = self.database.write
        self._read = self.database.read

    def close(self) -> None:
        self.database.close()

    # -- jobs ---------------------------------------------------------------------------------

    def create_job(self, job: NewJob) -> JobRecord:
        row = {
            "request_id": job.request_id,
            "endpoint_id": job.endpoint_id,
            "status": JobStatus.IN_QUEUE.value,
            "priority": int(job.priority),
            "payload": json.dumps(job.payload),
            "created_at": _now_or(None),
            "start_deadline_at": job.start_deadline_at,
            "attempts": 0,
            "max_attempts": job.max_attempts,
            "base_url": job.base_url,
            "webhook_url": job.webhook_url,
            "webhook_format": job.webhook_format,
            "test_fault": job.test_fault,
            "submitted_by": job.submitted_by,
        }
        try:
            with self._write() as connection:
                connection.execute(jobs.insert().values(**row))
                notify(connection, JOBS_CHANNEL, job.endpoint_id)
                record = self._get(connection, job.request_id)
        except sa.exc.IntegrityError as error:
            raise KeyError(job.request_id) from error
        assert record is not None
        return record

    def get_job(self, request_id: str) -> JobRecord | None:
        with self._read() as connection:
            return self._get(connection, request_id)

    def _get(self, connection: Connection, request_id: str) -> JobRecord | None:
        row = connection.execute(sa.select(jobs).where(jobs.c.request_id == request_id)).mappings().first()
        return None if row is None else _to_record(row)

    def list_jobs(self, *, submitted_by: str | None, limit: int) -> list[JobRecord]:
        query = sa.select(jobs).order_by(jobs.c.seq.desc()).limit(limit)
        if submitted_by is not None:
            query = query.where(jobs.c.submitted_by == submitted_by)
        with self._read() as connection:
            return [_to_record(row) for row in connection.execute(query).mappings()]

    def queue_position(self, record: JobRecord) -> int:
        if record.status is not JobStatus.IN_QUEUE:
            return 0
        ahead = sa.and_(
            jobs.c.status == JobStatus.IN_QUEUE.value,
            jobs.c.endpoint_id == record.endpoint_id,
            sa.or_(
                jobs.c.priority > int(record.priority),
                sa.and_(jobs.c.priority == int(record.priority), jobs.c.seq < record.seq),
            ),
        )
        with self._read() as connection:
            return int(connection.execute(sa.select(sa.func.count()).select_from(jobs).where(ahead)).scalar_one())

    def list_events(self, request_id: str, *, after_id: int = 0, limit: int = 1000) -> list[JobEvent]:
        newest = (
            sa.select(job_events)
            .where(job_events.c.request_id == request_id, job_events.c.id > after_id)
            .order_by(job_events.c.id.desc())
            .limit(limit)
        )
        with self._read() as connection:
            rows = connection.execute(newest).mappings().all()
        return [
            JobEvent(
                id=row["id"],
                request_id=row["request_id"],
                created_at=row["created_at"],
                level=row["level"],
                message=row["message"],
            )
            for row in reversed(rows)
        ]

    def request_cancel(self, request_id: str, *, now: float) -> CancelOutcome:
        with self._write() as connection:
            record = self._get(connection, request_id)
            if record is None:
                return CancelOutcome.NOT_FOUND
            if record.status is JobStatus.COMPLETED:
                return CancelOutcome.ALREADY_COMPLETED
            if record.status is JobStatus.IN_QUEUE:
                self._finish(connection, request_id, jobs.c.request_id == request_id, CANCELLED_OUTCOME, now=now)
                _insert_events(connection, request_id, [EventInput("Cancelled while in the queue", created_at=now)])
                return CancelOutcome.CANCELLATION_REQUESTED
            if record.cancel_requested_at is None:
                connection.execute(jobs.update().where(jobs.c.request_id == request_id).values(cancel_requested_at=now))
                _insert_events(connection, request_id, [EventInput("Cancellation requested", created_at=now)])
            return CancelOutcome.CANCELLATION_REQUESTED

    def _claimable(self, endpoint_ids: Sequence[str], now: float) -> sa.ColumnElement[bool]:
        return sa.and_(
            jobs.c.status == JobStatus.IN_QUEUE.value,
            jobs.c.endpoint_id.in_(list(endpoint_ids)),
            sa.or_(jobs.c.start_deadline_at.is_(None), jobs.c.start_deadline_at > now),
        )

    def has_queued_job(self, endpoint_ids: Sequence[str], *, now: float) -> bool:
        if not endpoint_ids:
            return False
        with self._read() as connection:
            return (
                connection.execute(sa.select(jobs.c.seq).where(self._claimable(endpoint_ids, now)).limit(1)).first()
                is not None
            )

    def claim_job(
        self, *, worker_id: str, endpoint_ids: Sequence[str], lease_s: float, now: float
    ) -> ClaimedJob | None:
        if not endpoint_ids:
            return None
        candidate = (
            sa.select(jobs.c.seq)
            .where(self._claimable(endpoint_ids, now))
            .order_by(jobs.c.priority.desc(), jobs.c.seq)
            .limit(1)
        )
        if self._is_postgres:
            candidate = candidate.with_for_update(skip_locked=True)
        token = secrets.token_hex(16)
        claim = (
            jobs.update()
            .where(jobs.c.seq == candidate.scalar_subquery(), jobs.c.status == JobStatus.IN_QUEUE.value)
            .values(
                status=JobStatus.IN_PROGRESS.value,
                worker_id=worker_id,
                lease_token=token,
                lease_expires_at=now + lease_s,
                attempts=jobs.c.attempts + 1,
                started_at=sa.func.coalesce(jobs.c.started_at, now),
            )
            .returning(jobs.c.request_id)
        )
        with self._write() as connection:
            request_id = connection.execute(claim).scalar()
            if request_id is None:
                return None
            record = self._get(connection, request_id)
            assert record is not None
            _insert_events(
                connection,
                request_id,
                [EventInput(f"Started on worker {worker_id} (attempt {record.attempts})", created_at=now)],
            )
        return ClaimedJob(record=record, lease_token=token)

    def _fenced(self, request_id: str, lease_token: str) -> sa.ColumnElement[bool]:
        return sa.and_(
            jobs.c.request_id == request_id,
            jobs.c.lease_token == lease_token,
            jobs.c.status == JobStatus.IN_PROGRESS.value,
        )

    def renew_lease(self, request_id: str, lease_token: str, *, lease_s: float, now: float) -> LeaseState:
        renew = (
            jobs.update()
            .where(self._fenced(request_id, lease_token))
            .values(lease_expires_at=now + lease_s)
            .returning(jobs.c.cancel_requested_at)
        )
        with self._write() as connection:
            row = connection.execute(renew).first()
        if row is None:
            return LeaseState(held=False, cancel_requested=False)
        return LeaseState(held=True, cancel_requested=row[0] is not None)

    def append_events(self, request_id: str, lease_token: str, events: Sequence[EventInput]) -> bool:
        if not events:
            return True
        with self._write() as connection:
            held = connection.execute(sa.select(jobs.c.seq).where(self._fenced(request_id, lease_token))).first()
            if held is None:
                return False
            _insert_events(connection, request_id, events)
            progress = [event.progress for event in events if event.progress is not None]
            if progress:
                connection.execute(
                    jobs.update().where(jobs.c.request_id == request_id).values(progress=json.dumps(progress[-1]))
                )
        return True

    def set_upstream(self, request_id: str, lease_token: str, upstream: dict[str, Any]) -> bool:
        with self._write() as connection:
            result = connection.execute(
                jobs.update().where(self._fenced(request_id, lease_token)).values(upstream=json.dumps(upstream))
            )
            return bool(result.rowcount)

    def complete_job(
        self, request_id: str, lease_token: str, outcome: JobOutcome, *, now: float, events: Sequence[EventInput] = ()
    ) -> bool:
        with self._write() as connection:
            done = self._finish(connection, request_id, self._fenced(request_id, lease_token), outcome, now=now)
            if done:
                _insert_events(connection, request_id, events)
            return done

    def release_job(self, request_id: str, lease_token: str, *, now: float) -> bool:
        with self._write() as connection:
            released = connection.execute(
                jobs.update()
                .where(self._fenced(request_id, lease_token))
                .values(
                    status=JobStatus.IN_QUEUE.value,
                    worker_id=None,
                    lease_token=None,
                    lease_expires_at=None,
                    attempts=sa.case((jobs.c.attempts > 0, jobs.c.attempts - 1), else_=0),
                )
                .returning(jobs.c.endpoint_id)
            ).first()
            if released is None:
                return False
            notify(connection, JOBS_CHANNEL, released.endpoint_id)
            _insert_events(connection, request_id, [EventInput("Worker stopped; back in the queue", created_at=now)])
            return True

    def _finish(
        self,
        connection: Connection,
        request_id: str,
        where: sa.ColumnElement[bool],
        outcome: JobOutcome,
        *,
        now: float,
    ) -> bool:
        """Make the job COMPLETED with `outcome` if `where` still holds, and queue its webhook."""
        result = connection.execute(
            jobs.update()
            .where(where)
            .values(
                status=JobStatus.COMPLETED.value,
                finished_at=now,
                lease_token=None,
                lease_expires_at=None,
                outcome_status_code=outcome.status_code,
                outcome_body=json.dumps(outcome.body),
                outcome_headers=json.dumps(outcome.headers),
                error=outcome.error,
                error_type=outcome.error_type,
                inference_time_s=outcome.inference_time_s,
            )
        )
        if not result.rowcount:
            return False
        notify(connection, EVENTS_CHANNEL, request_id)
        hook = connection.execute(
            sa.select(jobs.c.webhook_url, jobs.c.webhook_format).where(jobs.c.request_id == request_id)
        ).first()
        if hook is not None and hook.webhook_url:
            connection.execute(
                webhook_deliveries.insert().values(
                    request_id=request_id,
                    url=hook.webhook_url,
                    format=hook.webhook_format or "fal",
                    created_at=now,
                    next_attempt_at=now,
                    attempts=0,
                    state="pending",
                )
            )
        return True

    def reap(self, *, now: float, is_worker_alive: WorkerLiveness) -> ReapReport:
        requeued: list[str] = []
        failed: list[str] = []
        expired: list[str] = []
        cancelled: list[str] = []
        with self._write() as connection:
            late = connection.execute(
                sa.select(jobs.c.request_id).where(
                    jobs.c.status == JobStatus.IN_QUEUE.value,
                    jobs.c.start_deadline_at.is_not(None),
                    jobs.c.start_deadline_at <= now,
                )
            ).scalars()
            for request_id in list(late):
                where = sa.and_(jobs.c.request_id == request_id, jobs.c.status == JobStatus.IN_QUEUE.value)
                if self._finish(connection, request_id, where, START_TIMEOUT_OUTCOME, now=now):
                    _insert_events(connection, request_id, [EventInput("Start timeout expired in the queue", "ERROR")])
                    expired.append(request_id)

            running = (
                connection.execute(sa.select(jobs).where(jobs.c.status == JobStatus.IN_PROGRESS.value)).mappings().all()
            )
            for row in running:
                lease_expired = row["lease_expires_at"] is None or row["lease_expires_at"] <= now
                worker_gone = row["worker_id"] is not None and not is_worker_alive(row["worker_id"])
                if not (lease_expired or worker_gone):
                    continue
                request_id = row["request_id"]
                fence = self._fenced(request_id, row["lease_token"])
                worker = row["worker_id"]
                if row["cancel_requested_at"] is not None:
                    if self._finish(connection, request_id, fence, CANCELLED_OUTCOME, now=now):
                        cancelled.append(request_id)
                elif row["attempts"] >= row["max_attempts"]:
                    message = (
                        f"The worker running this request was lost {row['attempts']} times (last: {worker}); giving up"
                    )
                    outcome = error_outcome(503, message, "runner_disconnected")
                    if self._finish(connection, request_id, fence, outcome, now=now):
                        _insert_events(connection, request_id, [EventInput(message, "ERROR", created_at=now)])
                        failed.append(request_id)
                else:
                    result = connection.execute(
                        jobs.update()
                        .where(fence)
                        .values(
                            status=JobStatus.IN_QUEUE.value,
                            worker_id=None,
                            lease_token=None,
                            lease_expires_at=None,
                            progress=None,
                        )
                    )
                    if result.rowcount:
                        notify(connection, JOBS_CHANNEL, row["endpoint_id"])
                        message = (
                            f"Worker {worker} was lost; back in the queue "
                            f"(attempt {row['attempts']} of {row['max_attempts']} used)"
                        )
                        _insert_events(connection, request_id, [EventInput(message, "WARN", created_at=now)])
                        requeued.append(request_id)
        return ReapReport(requeued=requeued, failed=failed, expired=expired, cancelled=cancelled)

    # -- workers ------------------------------------------------------------------------------

    def upsert_worker(self, worker: WorkerRecord) -> None:
        values = {
            "endpoint_ids": json.dumps(list(worker.endpoint_ids)),
            "state": worker.state,
            "error": worker.error,
            "heartbeat_at": worker.heartbeat_at,
            "started_at": worker.started_at,
            "endpoints": json.dumps({endpoint_id: asdict(entry) for endpoint_id, entry in worker.endpoints.items()}),
            "resources": worker.resources.to_json(),
        }
        with self._write() as connection:
            updated = connection.execute(
                workers.update().where(workers.c.worker_id == worker.worker_id).values(**values)
            ).rowcount
            if not updated:
                connection.execute(workers.insert().values(worker_id=worker.worker_id, **values))

    def list_workers(self, *, alive_after: float) -> list[WorkerRecord]:
        with self._read() as connection:
            rows = connection.execute(
                sa.select(workers).where(workers.c.heartbeat_at > alive_after).order_by(workers.c.worker_id)
            ).mappings()
            return [
                WorkerRecord(
                    worker_id=row["worker_id"],
                    endpoint_ids=tuple(json.loads(row["endpoint_ids"])),
                    state=row["state"],
                    error=row["error"],
                    heartbeat_at=row["heartbeat_at"],
                    started_at=row["started_at"],
                    endpoints={
                        endpoint_id: WorkerEndpoint(**entry)
                        for endpoint_id, entry in json.loads(row["endpoints"] or "{}").items()
                    },
                    resources=WorkerResources.from_json(row["resources"]),
                )
                for row in rows
            ]

    def remove_worker(self, worker_id: str) -> None:
        with self._write() as connection:
            connection.execute(workers.delete().where(workers.c.worker_id == worker_id))


def _now_or(value: float | None) -> float:
    return time.time() if value is None else value


def _insert_events(connection: Connection, request_id: str, events: Sequence[EventInput]) -> None:
    if not events:
        return
    notify(connection, EVENTS_CHANNEL, request_id)
    connection.execute(
        job_events.insert(),
        [
            {
                "request_id": request_id,
                "created_at": _now_or(event.created_at),
                "level": event.level,
                "message": event.message,
            }
            for event in events
        ],
    )


def _to_record(row: sa.RowMapping) -> JobRecord:
    outcome = None
    if row["outcome_status_code"] is not None:
        outcome = JobOutcome(
            status_code=row["outcome_status_code"],
            body=json.loads(row["outcome_body"]),
            error=row["error"],
            error_type=row["error_type"],
            headers=json.loads(row["outcome_headers"] or "{}"),
            inference_time_s=row["inference_time_s"],
        )
    return JobRecord(
        request_id=row["request_id"],
        seq=row["seq"],
        endpoint_id=row["endpoint_id"],
        status=JobStatus(row["status"]),
        priority=Priority(row["priority"]),
        payload=json.loads(row["payload"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        start_deadline_at=row["start_deadline_at"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        worker_id=row["worker_id"],
        cancel_requested_at=row["cancel_requested_at"],
        base_url=row["base_url"],
        webhook_url=row["webhook_url"],
        webhook_format=row["webhook_format"],
        test_fault=row["test_fault"],
        outcome=outcome,
        progress=json.loads(row["progress"]) if row["progress"] else None,
        upstream=json.loads(row["upstream"]) if row["upstream"] else None,
        submitted_by=row["submitted_by"],
    )
