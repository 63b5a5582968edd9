"""`JobStore` on SQLAlchemy Core: SQLite (WAL) for one machine, PostgreSQL for many.

SQLite has no row locks, so every write transaction starts with
`BEGIN IMMEDIATE`: writers queue on the database lock (bounded by
`busy_timeout`) instead of failing half-way. Readers use a deferred BEGIN and
never block writers under WAL. On PostgreSQL the claim adds
`FOR UPDATE SKIP LOCKED` so concurrent workers never wait on each other.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

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
    error_outcome,
)

SCHEMA_VERSION = 2

metadata = sa.MetaData()

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=False, unique=True),
    sa.Column("endpoint_id", sa.String(200), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("start_deadline_at", sa.Float),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("worker_id", sa.String(200)),
    sa.Column("lease_token", sa.String(64)),
    sa.Column("lease_expires_at", sa.Float),
    sa.Column("cancel_requested_at", sa.Float),
    sa.Column("base_url", sa.Text),
    sa.Column("webhook_url", sa.Text),
    sa.Column("test_fault", sa.String(200)),
    sa.Column("outcome_status_code", sa.Integer),
    sa.Column("outcome_body", sa.Text),
    sa.Column("outcome_headers", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("error_type", sa.String(64)),
    sa.Column("inference_time_s", sa.Float),
    sa.Column("progress", sa.Text),
    sa.Index("ix_jobs_queue", "status", "endpoint_id", "priority", "seq"),
)

job_events = sa.Table(
    "job_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Index("ix_job_events_request", "request_id", "id"),
)

workers = sa.Table(
    "workers",
    metadata,
    sa.Column("worker_id", sa.String(200), primary_key=True),
    sa.Column("endpoint_ids", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    # JSON: endpoint_id -> {engine, weights, device, state, error} (schema version 2).
    sa.Column("endpoints", sa.Text),
)

schema_info = sa.Table(
    "schema_info",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
)

# Statements that bring a database from version N-1 to N; `create_all` covers a new database.
# Plain SQL that SQLite and PostgreSQL both accept.
MIGRATIONS: dict[int, list[str]] = {
    2: ["ALTER TABLE workers ADD COLUMN endpoints TEXT"],
}

CANCELLED_OUTCOME = error_outcome(499, "Request was cancelled by the client", "client_cancelled")
START_TIMEOUT_OUTCOME = error_outcome(
    504,
    "Request could not start before its start timeout",
    "request_timeout",
    headers={"X-Fal-Request-Timeout-Type": "user"},
)


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL; None for other databases and in-memory SQLite."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def _sqlite_engines(url: str) -> tuple[Engine, Engine]:
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)

    def make(begin_statement: str) -> Engine:
        engine = sa.create_engine(url, pool_size=8, max_overflow=32, pool_pre_ping=False)

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Hand transaction control to SQLAlchemy's "begin" event below.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(connection: Connection) -> None:
            connection.exec_driver_sql(begin_statement)

        return engine

    return make("BEGIN IMMEDIATE"), make("BEGIN")


class SqlJobStore:
    """The job store on SQLite or PostgreSQL (chosen by URL)."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite"):
            self._writer, self._reader = _sqlite_engines(url)
        else:
            self._writer = sa.create_engine(url, pool_size=8, max_overflow=32, pool_pre_ping=True)
            self._reader = self._writer
        self._is_postgres = self._writer.dialect.name == "postgresql"
        self._migrate()

    def _migrate(self) -> None:
        with self._writer.begin() as connection:
            metadata.create_all(connection)
            version = connection.execute(sa.select(schema_info.c.version)).scalar()
            if version is None:
                connection.execute(schema_info.insert().values(version=SCHEMA_VERSION))
                return
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"the job database has schema version {version}, newer than this framecast ({SCHEMA_VERSION})"
                )
            for step_version in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[step_version]:
                    connection.exec_driver_sql(statement)
            connection.execute(schema_info.update().values(version=SCHEMA_VERSION))

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._writer.begin() as connection:
            yield connection

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._reader.begin() as connection:
            yield connection

    def close(self) -> None:
        self._writer.dispose()
        self._reader.dispose()

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
            "test_fault": job.test_fault,
        }
        try:
            with self._write() as connection:
                connection.execute(jobs.insert().values(**row))
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
                self._finish(connection, jobs.c.request_id == request_id, CANCELLED_OUTCOME, now=now)
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

    def complete_job(
        self, request_id: str, lease_token: str, outcome: JobOutcome, *, now: float, events: Sequence[EventInput] = ()
    ) -> bool:
        with self._write() as connection:
            done = self._finish(connection, self._fenced(request_id, lease_token), outcome, now=now)
            if done:
                _insert_events(connection, request_id, events)
            return done

    def release_job(self, request_id: str, lease_token: str, *, now: float) -> bool:
        with self._write() as connection:
            result = connection.execute(
                jobs.update()
                .where(self._fenced(request_id, lease_token))
                .values(
                    status=JobStatus.IN_QUEUE.value,
                    worker_id=None,
                    lease_token=None,
                    lease_expires_at=None,
                    attempts=sa.case((jobs.c.attempts > 0, jobs.c.attempts - 1), else_=0),
                )
            )
            if result.rowcount:
                _insert_events(
                    connection, request_id, [EventInput("Worker stopped; back in the queue", created_at=now)]
                )
            return bool(result.rowcount)

    def _finish(
        self, connection: Connection, where: sa.ColumnElement[bool], outcome: JobOutcome, *, now: float
    ) -> bool:
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
        return bool(result.rowcount)

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
                if self._finish(connection, where, START_TIMEOUT_OUTCOME, now=now):
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
                    if self._finish(connection, fence, CANCELLED_OUTCOME, now=now):
                        cancelled.append(request_id)
                elif row["attempts"] >= row["max_attempts"]:
                    message = (
                        f"The worker running this request was lost {row['attempts']} times (last: {worker}); giving up"
                    )
                    outcome = error_outcome(503, message, "runner_disconnected")
                    if self._finish(connection, fence, outcome, now=now):
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
        test_fault=row["test_fault"],
        outcome=outcome,
        progress=json.loads(row["progress"]) if row["progress"] else None,
    )
