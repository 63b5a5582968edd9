"""The ChangeFeed contract on both implementations, and the notifications the SQL stores send on PostgreSQL.

Waits are checked against generous bounds (a woken wait returns in under half of a 30 s timeout; a wait nobody
wakes lasts its whole short timeout): behaviour, not speed.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.synchronize
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from framecast.store.changes import (
    EVENTS_CHANNEL,
    JOBS_CHANNEL,
    ChangeFeed,
    PollingChangeFeed,
    PostgresChangeFeed,
    open_change_feed,
)
from framecast.store.database import SqlDatabase, libpq_url
from framecast.store.jobs import EventInput, JobOutcome, NewJob
from framecast.store.outbox import AttemptResult, SqlWebhookOutbox
from framecast.store.sql_jobs import SqlJobStore

ENDPOINT = "fal-ai/wan-i2v"
OTHER_ENDPOINT = "fal-ai/other"
NOW = 1_000_000.0
# A wait that something wakes must end well before this; one that nothing wakes runs it out.
LONG_TIMEOUT_S = 30.0
SHORT_TIMEOUT_S = 1.0
POLLING_TIMEOUT_S = 0.3


@pytest.fixture
def feed(database: SqlDatabase) -> Iterator[ChangeFeed]:
    instance = open_change_feed(database)
    if isinstance(instance, PostgresChangeFeed):
        assert instance.wait_until_listening(30), "the change feed never connected"
    yield instance
    instance.close()


class TimedWait:
    """Runs a blocking wait in a thread and records how long it took."""

    def __init__(self, wait: Callable[[], Any]) -> None:
        self.elapsed_s: float | None = None
        self._thread = threading.Thread(target=self._run, args=(wait,), daemon=True)
        self._thread.start()

    def _run(self, wait: Callable[[], Any]) -> None:
        started = time.monotonic()
        wait()
        self.elapsed_s = time.monotonic() - started

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout_s: float) -> float:
        self._thread.join(timeout_s)
        assert self.elapsed_s is not None, "the wait did not end"
        return self.elapsed_s


def keep_doing(action: Callable[[], None], until: Callable[[], bool], deadline_s: float = 40.0) -> None:
    """Repeat `action` until `until()` holds: a wake sent before the waiter registered is lost, so send again."""
    deadline = time.monotonic() + deadline_s
    while not until() and time.monotonic() < deadline:
        action()
        time.sleep(0.02)


def send_notification(url: str, channel: str, payload: str) -> None:
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        connection.execute("SELECT pg_notify(%s, %s)", (channel, payload))


# -- the contract, on both implementations ---------------------------------------------------------


def test_open_change_feed_picks_the_implementation(database: SqlDatabase, feed: ChangeFeed) -> None:
    expected = PostgresChangeFeed if database.is_postgres else PollingChangeFeed
    assert isinstance(feed, expected) and feed.wakes_early is database.is_postgres


def test_a_new_job_wakes_waiters_for_its_endpoint_only(database: SqlDatabase, feed: ChangeFeed) -> None:
    store = SqlJobStore(database)
    timeout_s = LONG_TIMEOUT_S if feed.wakes_early else POLLING_TIMEOUT_S
    mine = TimedWait(lambda: feed.wait_for_jobs([OTHER_ENDPOINT, ENDPOINT], timeout_s))
    others = TimedWait(lambda: feed.wait_for_jobs([OTHER_ENDPOINT], SHORT_TIMEOUT_S))
    keep_doing(lambda: store.create_job(NewJob(str(uuid.uuid4()), ENDPOINT, {})), lambda: mine.done and others.done)
    if feed.wakes_early:
        assert mine.join(1) < timeout_s / 2
    else:
        assert mine.join(1) >= timeout_s
    assert others.join(1) >= SHORT_TIMEOUT_S, "a waiter for another endpoint was woken"


def test_news_of_a_request_wakes_its_watchers_only(database: SqlDatabase, feed: ChangeFeed) -> None:
    store = SqlJobStore(database)
    store.create_job(NewJob("watched", ENDPOINT, {}))
    claimed = store.claim_job(worker_id="w", endpoint_ids=[ENDPOINT], lease_s=60, now=NOW)
    assert claimed is not None
    timeout_s = LONG_TIMEOUT_S if feed.wakes_early else POLLING_TIMEOUT_S

    async def both() -> tuple[float, float]:
        async def timed(request_id: str, timeout_s: float) -> float:
            started = time.monotonic()
            await feed.wait_for_events(request_id, timeout_s)
            return time.monotonic() - started

        watched = asyncio.create_task(timed("watched", timeout_s))
        other = asyncio.create_task(timed("someone-else", SHORT_TIMEOUT_S))
        tasks = asyncio.gather(watched, other)

        def log_line() -> None:
            assert store.append_events("watched", claimed.lease_token, [EventInput("step")])

        await asyncio.to_thread(keep_doing, log_line, tasks.done)
        return await tasks

    watched_s, other_s = asyncio.run(both())
    if feed.wakes_early:
        assert watched_s < timeout_s / 2
    else:
        assert watched_s >= timeout_s
    assert other_s >= SHORT_TIMEOUT_S, "a watcher of another request was woken"


def test_close_ends_waits_and_later_waits_return_at_once(database: SqlDatabase) -> None:
    feed = open_change_feed(database)
    waiting = TimedWait(lambda: feed.wait_for_jobs([ENDPOINT], LONG_TIMEOUT_S))
    # Whether the wait began before the close or after it, it ends at once.
    feed.close()
    assert waiting.join(LONG_TIMEOUT_S) < LONG_TIMEOUT_S / 2
    assert TimedWait(lambda: feed.wait_for_jobs([ENDPOINT], LONG_TIMEOUT_S)).join(LONG_TIMEOUT_S) < 5
    started = time.monotonic()
    asyncio.run(feed.wait_for_events("r", LONG_TIMEOUT_S))
    assert time.monotonic() - started < 5
    feed.close()


# -- PostgreSQL: notifications from elsewhere, reconnection ------------------------------------------


def _create_jobs_until(url: str, endpoint_id: str, stop: multiprocessing.synchronize.Event) -> None:
    store = SqlJobStore(url)
    try:
        while not stop.wait(0.02):
            store.create_job(NewJob(str(uuid.uuid4()), endpoint_id, {}))
    finally:
        store.close()


def test_a_job_created_by_another_process_wakes_a_worker(postgres_url: str) -> None:
    database = SqlDatabase(postgres_url)
    feed = PostgresChangeFeed(postgres_url)
    try:
        assert feed.wait_until_listening(30)
        context = multiprocessing.get_context("spawn")
        stop = context.Event()
        submitter = context.Process(target=_create_jobs_until, args=(postgres_url, ENDPOINT, stop))
        submitter.start()
        try:
            waited_s = TimedWait(lambda: feed.wait_for_jobs([ENDPOINT], LONG_TIMEOUT_S)).join(LONG_TIMEOUT_S + 5)
        finally:
            stop.set()
            submitter.join(30)
        assert waited_s < LONG_TIMEOUT_S / 2
        assert submitter.exitcode == 0
    finally:
        feed.close()
        database.close()


def test_a_raw_notify_from_another_connection_wakes_both_kinds_of_wait(postgres_url: str) -> None:
    SqlDatabase(postgres_url).close()
    feed = PostgresChangeFeed(postgres_url)
    try:
        assert feed.wait_until_listening(30)
        jobs_wait = TimedWait(lambda: feed.wait_for_jobs([ENDPOINT], LONG_TIMEOUT_S))
        keep_doing(lambda: send_notification(postgres_url, JOBS_CHANNEL, ENDPOINT), lambda: jobs_wait.done)
        assert jobs_wait.join(1) < LONG_TIMEOUT_S / 2
        events_wait = TimedWait(lambda: asyncio.run(feed.wait_for_events("r1", LONG_TIMEOUT_S)))
        keep_doing(lambda: send_notification(postgres_url, EVENTS_CHANNEL, "r1"), lambda: events_wait.done)
        assert events_wait.join(1) < LONG_TIMEOUT_S / 2
    finally:
        feed.close()


def listener_pids(url: str) -> set[int]:
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        rows = connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'framecast-change-feed' AND datname = "
            "current_database()"
        ).fetchall()
    return {int(row[0]) for row in rows}


def test_the_feed_reconnects_when_its_connection_drops(postgres_url: str) -> None:
    SqlDatabase(postgres_url).close()
    feed = PostgresChangeFeed(postgres_url)
    try:
        assert feed.wait_until_listening(30)
        (first,) = listener_pids(postgres_url)
        with psycopg.connect(libpq_url(postgres_url), autocommit=True) as connection:
            connection.execute("SELECT pg_terminate_backend(%s)", (first,))
        deadline = time.monotonic() + 30
        while listener_pids(postgres_url) in (set(), {first}) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert listener_pids(postgres_url) not in (set(), {first}), "no new listening connection"
        waiting = TimedWait(lambda: feed.wait_for_jobs([ENDPOINT], LONG_TIMEOUT_S))
        keep_doing(lambda: send_notification(postgres_url, JOBS_CHANNEL, ENDPOINT), lambda: waiting.done)
        assert waiting.join(1) < LONG_TIMEOUT_S / 2
    finally:
        feed.close()
    assert listener_pids(postgres_url) == set(), "close() left the listening connection open"


# -- PostgreSQL: what the stores notify, and when -----------------------------------------------------


@pytest.fixture
def listener(postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    SqlDatabase(postgres_url).close()
    with psycopg.connect(libpq_url(postgres_url), autocommit=True) as connection:
        connection.execute(f"LISTEN {JOBS_CHANNEL}")
        connection.execute(f"LISTEN {EVENTS_CHANNEL}")
        yield connection


def received(listener: psycopg.Connection[Any]) -> set[tuple[str, str]]:
    """The notifications of the transactions committed so far (they come together, at each commit)."""
    first = [(notify.channel, notify.payload) for notify in listener.notifies(timeout=1.0, stop_after=1)]
    rest = [(notify.channel, notify.payload) for notify in listener.notifies(timeout=0.1)] if first else []
    return {*first, *rest}


def test_the_job_store_notifies_claimable_jobs_and_news(postgres_url: str, listener: psycopg.Connection[Any]) -> None:
    store = SqlJobStore(postgres_url)
    try:
        store.create_job(NewJob("r1", ENDPOINT, {}))
        assert received(listener) == {(JOBS_CHANNEL, ENDPOINT)}

        claimed = store.claim_job(worker_id="w", endpoint_ids=[ENDPOINT], lease_s=1, now=NOW)
        assert claimed is not None
        assert received(listener) == {(EVENTS_CHANNEL, "r1")}, "the claim's 'Started' event"
        assert store.append_events("r1", claimed.lease_token, [EventInput("working")])
        assert received(listener) == {(EVENTS_CHANNEL, "r1")}
        assert store.release_job("r1", claimed.lease_token, now=NOW)
        assert (JOBS_CHANNEL, ENDPOINT) in received(listener)

        claimed = store.claim_job(worker_id="w", endpoint_ids=[ENDPOINT], lease_s=1, now=NOW)
        assert claimed is not None
        received(listener)
        store.reap(now=NOW + 5, is_worker_alive=lambda _worker: True)
        assert (JOBS_CHANNEL, ENDPOINT) in received(listener), "the reaper's requeue"

        claimed = store.claim_job(worker_id="w", endpoint_ids=[ENDPOINT], lease_s=60, now=NOW)
        assert claimed is not None
        received(listener)
        store.request_cancel("r1", now=NOW)
        assert received(listener) == {(EVENTS_CHANNEL, "r1")}, "a cancel request"
        assert store.complete_job("r1", claimed.lease_token, JobOutcome(200, {}), now=NOW)
        assert received(listener) == {(EVENTS_CHANNEL, "r1")}, "the end"

        store.create_job(NewJob("queued", ENDPOINT, {}))
        received(listener)
        store.request_cancel("queued", now=NOW)
        assert received(listener) == {(EVENTS_CHANNEL, "queued")}, "a queued job's cancel ends it"
    finally:
        store.close()


def test_nothing_is_notified_for_a_change_that_rolled_back(
    postgres_url: str, listener: psycopg.Connection[Any]
) -> None:
    store = SqlJobStore(postgres_url)
    try:
        store.create_job(NewJob("r1", ENDPOINT, {}))
        received(listener)
        with pytest.raises(KeyError):
            store.create_job(NewJob("r1", OTHER_ENDPOINT, {}))
        assert received(listener) == set()
        claimed = store.claim_job(worker_id="w", endpoint_ids=[ENDPOINT], lease_s=60, now=NOW)
        assert claimed is not None
        received(listener)
        assert not store.append_events("r1", "stale-token", [EventInput("forged")])
        assert received(listener) == set(), "a fenced write that wrote nothing"
    finally:
        store.close()


def test_a_webhook_attempt_is_news_for_its_request(postgres_url: str, listener: psycopg.Connection[Any]) -> None:
    database = SqlDatabase(postgres_url)
    store = SqlJobStore(database)
    outbox = SqlWebhookOutbox(database)
    try:
        store.create_job(NewJob("r1", ENDPOINT, {}, webhook_url="https://hooks.example.com/x"))
        claimed = store.claim_job(worker_id="w", endpoint_ids=[ENDPOINT], lease_s=60, now=NOW)
        assert claimed is not None
        assert store.complete_job("r1", claimed.lease_token, JobOutcome(200, {}), now=NOW)
        (delivery,) = outbox.claim_due(now=NOW, lease_s=60, limit=10)
        received(listener)
        result = AttemptResult(True, 200, None, None, "delivered")
        assert outbox.record_attempt(delivery.delivery.id, delivery.claim_token, result, now=NOW)
        assert received(listener) == {(EVENTS_CHANNEL, "r1")}
    finally:
        database.close()
