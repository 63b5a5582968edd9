"""SqlJobStore and SqlDatabase specifics, on SQLite and PostgreSQL: schema migrations, opening a database from
several processes at once, and the URLs users write."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import sqlite3

import psycopg
import pytest
import sqlalchemy as sa

from framecast.store.database import SCHEMA_VERSION, SqlDatabase, engine_url, libpq_url, sqlite_path
from framecast.store.jobs import WorkerEndpoint, WorkerRecord
from framecast.store.sql_jobs import SqlJobStore

VERSION_1_WORKERS = """
CREATE TABLE workers (
    worker_id VARCHAR(200) PRIMARY KEY, endpoint_ids TEXT NOT NULL, state VARCHAR(16) NOT NULL,
    error TEXT, heartbeat_at FLOAT NOT NULL, started_at FLOAT NOT NULL
);
CREATE TABLE schema_info (version INTEGER NOT NULL);
INSERT INTO schema_info VALUES (1);
INSERT INTO workers VALUES ('old:1:x', '["fal-ai/wan-i2v"]', 'ready', NULL, 1.0, 1.0);
"""


def run_sql(url: str, script: str) -> list[tuple[object, ...]]:
    """Run `script` outside framecast (as an older framecast or an operator would); the last statement's rows."""
    path = sqlite_path(url)
    if path is not None:
        with sqlite3.connect(path) as connection:
            *statements, last = [statement for statement in script.split(";") if statement.strip()]
            for statement in statements:
                connection.execute(statement)
            return connection.execute(last).fetchall()
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        cursor = connection.execute(script)  # one simple-protocol query may hold several statements
        return cursor.fetchall() if cursor.description else []


def test_a_version_1_database_is_migrated_in_place(database_url: str) -> None:
    run_sql(database_url, VERSION_1_WORKERS)
    store = SqlJobStore(database_url)
    (old,) = store.list_workers(alive_after=0)
    assert (old.worker_id, dict(old.endpoints)) == ("old:1:x", {})
    endpoint = WorkerEndpoint("diffusers-wan-i2v", "/w", "cpu", "ready")
    store.upsert_worker(WorkerRecord("new:1:y", (), "ready", None, 2.0, 2.0, {"fal-ai/wan-i2v": endpoint}))
    assert store.list_workers(alive_after=1.5)[0].endpoints["fal-ai/wan-i2v"] == endpoint
    store.close()
    assert run_sql(database_url, "SELECT version FROM schema_info") == [(SCHEMA_VERSION,)]


def test_a_newer_database_is_refused(database_url: str) -> None:
    SqlJobStore(database_url).close()
    run_sql(database_url, "UPDATE schema_info SET version = 99")
    with pytest.raises(RuntimeError, match="newer than this framecast"):
        SqlJobStore(database_url)


def _open_database(url: str, barrier: multiprocessing.synchronize.Barrier, errors: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    barrier.wait(timeout=60)
    try:
        SqlDatabase(url).close()
        errors.put(None)
    except Exception as error:  # reported to the test, which shows it
        errors.put(f"{type(error).__name__}: {error}")


def test_processes_opening_a_fresh_database_together_all_succeed(database_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    errors: multiprocessing.Queue = context.Queue()  # type: ignore[type-arg]
    processes = [context.Process(target=_open_database, args=(database_url, barrier, errors)) for _ in range(4)]
    for process in processes:
        process.start()
    outcomes = [errors.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert outcomes == [None] * 4
    database = SqlDatabase(database_url)
    with database.read() as connection:
        assert connection.execute(sa.text("SELECT version FROM schema_info")).scalars().all() == [SCHEMA_VERSION]
    database.close()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://app:pw@db:5432/jobs", "postgresql+psycopg://app:pw@db:5432/jobs"),
        ("postgres://app@db/jobs?sslmode=require", "postgresql+psycopg://app@db/jobs?sslmode=require"),
        ("postgresql+psycopg://app@db/jobs", "postgresql+psycopg://app@db/jobs"),
        ("sqlite:////var/lib/framecast/framecast.db", "sqlite:////var/lib/framecast/framecast.db"),
    ],
)
def test_plain_postgresql_urls_use_psycopg(given: str, expected: str) -> None:
    assert engine_url(given) == expected


def test_libpq_urls_drop_the_driver() -> None:
    assert libpq_url("postgresql+psycopg://app:pw@db:5432/jobs?sslmode=require") == (
        "postgresql://app:pw@db:5432/jobs?sslmode=require"
    )


def test_a_plain_postgresql_url_opens(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql://")
    database = SqlDatabase(postgres_url)
    try:
        assert database.is_postgres and database.url.startswith("postgresql+psycopg://")
    finally:
        database.close()
