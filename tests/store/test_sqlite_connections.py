"""SQLite connections are pooled for as many threads as the API runs store calls on.

Found by the load test (docs/reliability.md): with 8 pooled connections and 40 worker threads, every
checkout past the 8th opened a new SQLite connection (and ran its PRAGMAs) and closed it again on return.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from framecast.store.database import SqlDatabase


async def _api_threads() -> int:
    return int(anyio.to_thread.current_default_thread_limiter().total_tokens)


# The API (framecast.service.queue, framecast.api.auth) runs every store call on anyio's worker threads.
API_THREADS = anyio.run(_api_threads)
ROUNDS = 4


@pytest.fixture
def connections_opened() -> Iterator[list[int]]:
    """A counter of new DBAPI connections, on every engine."""
    opened = [0]

    def count(_connection: Any, _record: Any) -> None:
        opened[0] += 1

    sa.event.listen(Engine, "connect", count)
    yield opened
    sa.event.remove(Engine, "connect", count)


def test_as_many_concurrent_readers_as_api_threads_reuse_their_connections(
    tmp_path: Path, connections_opened: list[int]
) -> None:
    database = SqlDatabase(f"sqlite:///{tmp_path / 'jobs.db'}")
    inside = threading.Barrier(API_THREADS)
    after_round: list[int] = []
    failures: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(ROUNDS):
                with database.read() as connection:
                    assert connection.exec_driver_sql("SELECT 1").scalar_one() == 1
                    # Every thread holds its connection at once: the pool must have one for each.
                    if inside.wait(timeout=60) == 0:
                        after_round.append(connections_opened[0])
                inside.wait(timeout=60)  # all returned theirs before the next round
        except BaseException as error:
            failures.append(error)
            inside.abort()

    threads = [threading.Thread(target=read) for _ in range(API_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    database.close()

    assert failures == []
    assert len(after_round) == ROUNDS
    # The first round opens one connection per thread; later rounds open none.
    assert after_round[1:] == [after_round[0]] * (ROUNDS - 1)
