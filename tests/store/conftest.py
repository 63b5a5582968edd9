from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from framecast.store.database import SqlDatabase


@pytest.fixture(params=["sqlite"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlDatabase]:
    """The SQL database behind the credential, outbox and upload contract suites (PostgreSQL joins in scale-out)."""
    instance = SqlDatabase(f"sqlite:///{tmp_path / 'jobs.db'}")
    yield instance
    instance.close()
