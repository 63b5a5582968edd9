"""The SQL database behind the job store, the credentials, the webhook outbox and the upload ledger.

One database (SQLite with WAL for one machine, PostgreSQL for many) holds every
table, so a job's result, its events and its webhook delivery commit together.

SQLite has no row locks, so every write transaction starts with
`BEGIN IMMEDIATE`: writers queue on the database lock (bounded by
`busy_timeout`) instead of failing half-way. Readers use a deferred BEGIN and
never block writers under WAL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

SCHEMA_VERSION = 6

# Row ids and byte counts that may outgrow 32 bits on PostgreSQL; on SQLite an INTEGER PRIMARY KEY is already
# 64-bit and must stay INTEGER to be the autoincrementing rowid.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData()

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("seq", BigId, primary_key=True, autoincrement=True),
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
    # Which webhook body and signature: "fal" (Ed25519) or "wavespeed" (HMAC); schema version 3.
    sa.Column("webhook_format", sa.String(16)),
    # A relayed job's request on the upstream server (JSON), so a retry resumes it; schema version 4.
    sa.Column("upstream", sa.Text),
    # The API key id that submitted it, for each key's request history; schema version 5.
    sa.Column("submitted_by", sa.String(32)),
    sa.Column("test_fault", sa.String(200)),
    sa.Column("outcome_status_code", sa.Integer),
    sa.Column("outcome_body", sa.Text),
    sa.Column("outcome_headers", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("error_type", sa.String(64)),
    sa.Column("inference_time_s", sa.Float),
    sa.Column("progress", sa.Text),
    sa.Index("ix_jobs_queue", "status", "endpoint_id", "priority", "seq"),
    sa.Index("ix_jobs_submitted_by", "submitted_by", "seq"),
)

job_events = sa.Table(
    "job_events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
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
    # JSON: {"devices": [{device, allocated_bytes, reserved_bytes, total_bytes}]}, the engine's GPU memory
    # as of its last report (schema version 6).
    sa.Column("resources", sa.Text),
)

# -- schema version 3: API keys, server secrets, the webhook outbox, uploads -----------------------

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    # Given by the operator, any length.
    sa.Column("name", sa.Text, nullable=False, unique=True),
    # sha256 of the whole key; the key itself is shown once and never stored.
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
)

signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("kid", sa.String(64), primary_key=True),
    sa.Column("algorithm", sa.String(16), nullable=False),
    # The raw private key, base64. Whoever reads the database can sign webhooks (docs/webhooks.md).
    sa.Column("private_key", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    # The newest key that is not retired signs; retired keys leave the JWKS.
    sa.Column("retired_at", sa.Float),
)

server_secrets = sa.Table(
    "server_secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    # One delivery per finished job: written in the transaction that finishes it.
    sa.Column("request_id", sa.String(64), nullable=False, unique=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("format", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("next_attempt_at", sa.Float, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("state", sa.String(16), nullable=False),  # pending | delivered | failed
    sa.Column("claim_token", sa.String(64)),
    sa.Column("claimed_until", sa.Float),
    sa.Column("last_status_code", sa.Integer),
    sa.Column("last_error", sa.Text),
    sa.Column("finished_at", sa.Float),
    sa.Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
)

uploads = sa.Table(
    "uploads",
    metadata,
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    # As the client sent it (normalised, not length-checked): unbounded, as SQLite stores it.
    sa.Column("content_type", sa.Text, nullable=False),
    sa.Index("ix_uploads_expires_at", "expires_at"),
)

schema_info = sa.Table(
    "schema_info",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
)

# The columns that version N added to tables that existed before it: (table, column, SQL type).
# New tables come from `create_all`. Plain SQL that SQLite and PostgreSQL both accept.
MIGRATIONS: dict[int, list[tuple[str, str, str]]] = {
    2: [("workers", "endpoints", "TEXT")],
    3: [("jobs", "webhook_format", "VARCHAR(16)")],
    4: [("jobs", "upstream", "TEXT")],
    5: [("jobs", "submitted_by", "VARCHAR(32)")],
    6: [("workers", "resources", "TEXT")],
}


# Any 64-bit number, the same in every framecast: PostgreSQL's advisory lock that serialises migrations.
MIGRATION_LOCK_ID = 0x6672616D65636173  # "framecas"


def engine_url(url: str) -> str:
    """`url` with a SQLAlchemy driver: `postgresql://` and `postgres://` (as users and libpq write them) use psycopg 3.

    Other URLs, and PostgreSQL URLs that name a driver, are returned unchanged.
    """
    parsed = sa.engine.make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def libpq_url(url: str) -> str:
    """A PostgreSQL URL as libpq (psycopg.connect) takes it: no SQLAlchemy driver name."""
    return sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL; None for other databases and in-memory SQLite."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


# Connections each SQLite engine keeps open. The API runs store calls on anyio's worker threads (40 by default),
# each holding a connection while it runs; with fewer pooled, every checkout past the pool opened a connection
# (and ran the PRAGMAs below) and closed it again on return, a quarter of the API's CPU under load
# (docs/reliability.md). An idle SQLite connection costs a file handle and its page cache.
SQLITE_POOL_SIZE = 40


def _sqlite_engines(url: str) -> tuple[Engine, Engine]:
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)

    def make(begin_statement: str) -> Engine:
        engine = sa.create_engine(url, pool_size=SQLITE_POOL_SIZE, max_overflow=32, pool_pre_ping=False)

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


class SqlDatabase:
    """Engines for one database URL, migrated to `SCHEMA_VERSION` on open.

    Raises `RuntimeError` when the database was written by a newer framecast.
    """

    def __init__(self, url: str) -> None:
        self.url = engine_url(url)
        if self.url.startswith("sqlite"):
            self._writer, self._reader = _sqlite_engines(self.url)
        else:
            self._writer = sa.create_engine(self.url, pool_size=8, max_overflow=32, pool_pre_ping=True)
            self._reader = self._writer
        self.is_postgres = self._writer.dialect.name == "postgresql"
        self._migrate()

    def _migrate(self) -> None:
        with self._writer.begin() as connection:
            if self.is_postgres:
                # Processes opening a fresh database together would race on CREATE TABLE; the lock ends with the
                # transaction. (SQLite's BEGIN IMMEDIATE already serialises them.)
                connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK_ID)))
            metadata.create_all(connection)
            version = connection.execute(sa.select(schema_info.c.version)).scalar()
            if version is None:
                connection.execute(schema_info.insert().values(version=SCHEMA_VERSION))
                return
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"the job database has schema version {version}, newer than this framecast ({SCHEMA_VERSION})"
                )
            inspector = sa.inspect(connection)
            for step_version in range(version + 1, SCHEMA_VERSION + 1):
                for table, column, sql_type in MIGRATIONS[step_version]:
                    # `create_all` made any table that was missing with every column already.
                    if column not in {existing["name"] for existing in inspector.get_columns(table)}:
                        connection.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")
            connection.execute(schema_info.update().values(version=SCHEMA_VERSION))

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (on SQLite it holds the database lock from its first statement)."""
        with self._writer.begin() as connection:
            yield connection

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self._reader.begin() as connection:
            yield connection

    def close(self) -> None:
        self._writer.dispose()
        self._reader.dispose()
