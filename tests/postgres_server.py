"""A private PostgreSQL server for the tests, started with scripts/postgres on a free port.

`postgres_server` (session) starts one server; `postgres_url` (function) gives each test a fresh, empty
database on it and drops it afterwards. When PostgreSQL cannot be started the tests that need it fail,
never skip: CI must run them.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "postgres"
# A first start may install Debian's postgresql package.
START_TIMEOUT_S = 600


@dataclass(frozen=True)
class PostgresServer:
    directory: Path
    # The server's own database, for administration: postgresql://framecast@127.0.0.1:PORT/framecast.
    url: str

    def create_database(self) -> str:
        """A new empty database; its URL (plain `postgresql://`, as users write it)."""
        name = f"test_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return sa.engine.make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def drop_database(self, url: str) -> None:
        """Drop it even while a test's leftover connections hold it."""
        name = sa.engine.make_url(url).database
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_script(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *arguments], capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False
    )


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    # Not under pytest's tmp_path: its parents are private to us, and as root the server runs as 'postgres'.
    directory = Path(tempfile.mkdtemp(prefix="framecast-pg-"))
    failures: list[str] = []
    started: subprocess.CompletedProcess[str] | None = None
    # Another process may take the free port before the server binds it: try a few.
    for _attempt in range(3):
        result = run_script("start", str(directory), str(free_port()))
        if result.returncode == 0:
            started = result
            break
        failures.append(result.stderr.strip())
    if started is None:
        shutil.rmtree(directory, ignore_errors=True)
        pytest.fail("scripts/postgres could not start PostgreSQL:\n" + "\n---\n".join(failures), pytrace=False)
    try:
        yield PostgresServer(directory=directory, url=started.stdout.strip())
    finally:
        run_script("stop", str(directory))
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for one test: `postgresql://framecast@127.0.0.1:PORT/test_...`."""
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        postgres_server.drop_database(url)
