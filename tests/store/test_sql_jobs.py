"""SqlJobStore specifics: schema migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from framecast.store.database import SCHEMA_VERSION
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


def test_a_version_1_database_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with sqlite3.connect(path) as connection:
        connection.executescript(VERSION_1_WORKERS)
    store = SqlJobStore(f"sqlite:///{path}")
    (old,) = store.list_workers(alive_after=0)
    assert (old.worker_id, dict(old.endpoints)) == ("old:1:x", {})
    endpoint = WorkerEndpoint("diffusers-wan-i2v", "/w", "cpu", "ready")
    store.upsert_worker(WorkerRecord("new:1:y", (), "ready", None, 2.0, 2.0, {"fal-ai/wan-i2v": endpoint}))
    assert store.list_workers(alive_after=1.5)[0].endpoints["fal-ai/wan-i2v"] == endpoint
    store.close()
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT version FROM schema_info").fetchall() == [(SCHEMA_VERSION,)]


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    SqlJobStore(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE schema_info SET version = 99")
    with pytest.raises(RuntimeError, match="newer than this framecast"):
        SqlJobStore(f"sqlite:///{path}")
