"""Wake-ups when the job store changes: LISTEN/NOTIFY on PostgreSQL, a plain timeout on SQLite.

The job store sends a notification in the transaction that makes the change
(`notify`), so PostgreSQL delivers it only after the commit: whoever wakes and
re-reads the store sees the row. A wake-up says only that something *may* have
changed; callers always re-read the store, so a spurious wake costs one read and
a missed one (the feed reconnecting, a wake between the caller's read and its
wait) costs at most one timeout. Payloads carry ids only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import socket
import threading
from collections.abc import Sequence
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from framecast.store.database import SqlDatabase, libpq_url

logger = logging.getLogger("framecast.store.changes")

# Payload: the endpoint id of a job that became claimable (created, released, requeued).
JOBS_CHANNEL = "framecast_jobs"
# Payload: the request id of a job with news for its watchers (an event, a cancel request, its end).
EVENTS_CHANNEL = "framecast_events"

# An idle listener checks its connection this often, so a silently dropped one is replaced.
HEALTH_CHECK_S = 10.0
RECONNECT_DELAYS_S = (0.1, 0.5, 1.0, 2.0, 5.0)


class ChangeFeed(Protocol):
    """Waits that end early when the job store may have changed. Safe to share between threads and event loops."""

    # True when waits end as soon as a change commits (so callers can afford long timeouts);
    # False when every wait simply runs to its timeout.
    wakes_early: bool

    def wait_for_jobs(self, endpoint_ids: Sequence[str], timeout_s: float) -> None:
        """Block until a job may have become claimable for one of `endpoint_ids`, or `timeout_s` has passed."""
        ...

    async def wait_for_events(self, request_id: str, timeout_s: float) -> None:
        """Until `request_id` may have news (events, a cancel request, its end), or `timeout_s` has passed."""
        ...

    def close(self) -> None:
        """Idempotent. Ends every wait in progress; later waits return at once."""
        ...


def notify(connection: Connection, channel: str, payload: str) -> None:
    """Queue a notification in `connection`'s transaction (delivered on commit). Nothing on SQLite."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.select(sa.func.pg_notify(channel, payload)))


def open_change_feed(database: SqlDatabase) -> ChangeFeed:
    """LISTEN/NOTIFY on PostgreSQL; on SQLite (one machine, no notifications) waits that run to their timeout."""
    if database.is_postgres:
        return PostgresChangeFeed(database.url)
    return PollingChangeFeed()


class PollingChangeFeed:
    """Every wait runs to its timeout (or until `close`): callers poll the store at the rate they choose."""

    wakes_early = False

    def __init__(self) -> None:
        self._closed = threading.Event()

    def wait_for_jobs(self, endpoint_ids: Sequence[str], timeout_s: float) -> None:
        self._closed.wait(timeout_s)

    async def wait_for_events(self, request_id: str, timeout_s: float) -> None:
        if not self._closed.is_set():
            await asyncio.sleep(timeout_s)

    def close(self) -> None:
        self._closed.set()


class _Waiter(Protocol):
    def wake(self) -> None: ...


class _ThreadWaiter:
    def __init__(self) -> None:
        self.event = threading.Event()

    def wake(self) -> None:
        self.event.set()


class _LoopWaiter:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.event = asyncio.Event()

    def wake(self) -> None:
        # The loop may have closed since the waiter registered; nobody is waiting then.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.event.set)


class PostgresChangeFeed:
    """One dedicated connection per feed LISTENs on both channels in a daemon thread and wakes the matching waiters.

    The connection is replaced when it drops (with backoff); every waiter is woken after a reconnect, since
    notifications sent meanwhile are lost. `url` is any PostgreSQL URL (SQLAlchemy's or libpq's).
    """

    wakes_early = True

    def __init__(self, url: str) -> None:
        self._conninfo = libpq_url(url)
        self._lock = threading.Lock()
        self._waiters: dict[tuple[str, str], set[_Waiter]] = {}
        self._closed = threading.Event()
        self._listening = threading.Event()
        # `close` writes here to end the listener's select at once.
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._thread = threading.Thread(target=self._listen_forever, name="framecast-change-feed", daemon=True)
        self._thread.start()

    def wait_until_listening(self, timeout_s: float) -> bool:
        """True once the feed LISTENs (notifications committed from then on wake waiters); False on timeout."""
        return self._listening.wait(timeout_s)

    def wait_for_jobs(self, endpoint_ids: Sequence[str], timeout_s: float) -> None:
        waiter = _ThreadWaiter()
        keys = [(JOBS_CHANNEL, endpoint_id) for endpoint_id in endpoint_ids]
        if not self._register(keys, waiter):
            return
        try:
            waiter.event.wait(timeout_s)
        finally:
            self._unregister(keys, waiter)

    async def wait_for_events(self, request_id: str, timeout_s: float) -> None:
        waiter = _LoopWaiter(asyncio.get_running_loop())
        keys = [(EVENTS_CHANNEL, request_id)]
        if not self._register(keys, waiter):
            return
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.event.wait(), timeout_s)
        finally:
            self._unregister(keys, waiter)

    def close(self) -> None:
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"x")
        self._wake_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    # -- waiters ----------------------------------------------------------------------------------

    def _register(self, keys: list[tuple[str, str]], waiter: _Waiter) -> bool:
        with self._lock:
            if self._closed.is_set():
                return False
            for key in keys:
                self._waiters.setdefault(key, set()).add(waiter)
            return True

    def _unregister(self, keys: list[tuple[str, str]], waiter: _Waiter) -> None:
        with self._lock:
            for key in keys:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._waiters[key]

    def _wake(self, channel: str, payload: str) -> None:
        with self._lock:
            waiters = list(self._waiters.get((channel, payload), ()))
        for waiter in waiters:
            waiter.wake()

    def _wake_all(self) -> None:
        with self._lock:
            waiters = {waiter for group in self._waiters.values() for waiter in group}
        for waiter in waiters:
            waiter.wake()

    # -- the listener thread ----------------------------------------------------------------------

    def _listen_forever(self) -> None:
        failures = 0
        try:
            while not self._closed.is_set():
                try:
                    self._listen_once()
                    failures = 0
                except Exception as error:  # the database or the network; waits meanwhile run to their timeouts
                    if self._listening.is_set():
                        failures = 0  # it had worked: start the backoff again
                    if failures == 0:
                        logger.warning("change feed: %s; reconnecting (waits fall back to their timeouts)", error)
                    failures += 1
                finally:
                    self._listening.clear()
                self._closed.wait(RECONNECT_DELAYS_S[min(failures, len(RECONNECT_DELAYS_S) - 1)])
        finally:
            self._wake_reader.close()
            self._wake_writer.close()

    def _listen_once(self) -> None:
        """Listen on one connection until it fails (raises) or the feed closes (returns)."""
        # Imported here: psycopg takes a while to import, and SQLite deployments never need it.
        import psycopg

        with psycopg.connect(
            self._conninfo,
            autocommit=True,
            application_name="framecast-change-feed",
            connect_timeout=10,
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        ) as connection:
            connection.execute(f"LISTEN {JOBS_CHANNEL}")
            connection.execute(f"LISTEN {EVENTS_CHANNEL}")
            self._listening.set()
            # Whatever was notified while no connection listened is lost: let every waiter look again.
            self._wake_all()
            while not self._closed.is_set():
                wake = self._wake_reader.fileno()
                readable, _, _ = select.select([connection.fileno(), wake], [], [], HEALTH_CHECK_S)
                if wake in readable:
                    return
                if not readable:
                    # Idle: prove the connection still works (a half-open one would never deliver again).
                    connection.execute("SELECT 1")
                # Yields what arrived with the socket's data, or was buffered by the health check.
                for notification in connection.notifies(timeout=0):
                    self._wake(notification.channel, notification.payload)
