from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from framecast.store.database import SqlDatabase

DIALECTS = ["sqlite", "postgresql"]


@pytest.fixture(params=DIALECTS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each dialect: a SQLite file, or a fresh database on the test PostgreSQL server."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
def database(database_url: str) -> Iterator[SqlDatabase]:
    """The SQL database behind the job store, credential, outbox and upload contract suites."""
    instance = SqlDatabase(database_url)
    yield instance
    instance.close()
