"""Every log line written while the API handles a request about a job names that job's request id:
the app's own lines (in the event loop and in its worker threads) and uvicorn's access line."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from framecast.app import create_app
from framecast.logs import ContextFilter, JsonFormatter
from framecast.settings import Settings
from framecast.store.jobs import JobRecord, NewJob
from framecast.store.sql_jobs import SqlJobStore
from tests.api.conftest import make_api_key, png_uri

WAN = "fal-ai/wan-i2v"
spy_logger = logging.getLogger("tests.spy_store")


class SpyStore(SqlJobStore):
    """Logs a line from inside each store call, which the API runs in a worker thread."""

    def create_job(self, job: NewJob) -> JobRecord:
        spy_logger.info("create_job")
        return super().create_job(job)

    def get_job(self, request_id: str) -> JobRecord | None:
        spy_logger.info("get_job")
        return super().get_job(request_id)

    def list_workers(self, *, alive_after: float) -> list[Any]:
        spy_logger.info("list_workers")
        return super().list_workers(alive_after=alive_after)


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.addFilter(ContextFilter())
        self.lines: list[str] = []
        self.guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self.guard:
            self.lines.append(self.format(record))

    def entries(self) -> list[dict[str, Any]]:
        with self.guard:
            return [json.loads(line) for line in self.lines]


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    loggers = [spy_logger, logging.getLogger("uvicorn.access")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
    yield handler
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.mark.anyio
async def test_app_lines_name_the_request_they_handle(tmp_path: Path, lines: Lines) -> None:
    store = SpyStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    app = create_app(Settings(data_dir=tmp_path), store=store, readiness=lambda _endpoint: None)
    headers = {"Authorization": f"Key {make_api_key(store)}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as client:
        submitted = await client.post(f"/queue/{WAN}", json={"prompt": "p", "image_url": png_uri()})
        request_id = submitted.json()["request_id"]
        after_submit = len(lines.entries())
        # The transport runs every request in this one task: nothing may leak from one request to the next.
        assert (await client.get("/health")).status_code == 200
        after_health = len(lines.entries())
        assert (await client.get(f"/queue/{WAN}/requests/{request_id}/status")).status_code == 202
        assert (await client.get(f"/api/v3/predictions/{request_id}")).status_code == 200
    entries = lines.entries()
    assert [(entry["message"], entry["request_id"]) for entry in entries[:after_submit]] == [("create_job", request_id)]
    assert {(entry["message"], entry["request_id"]) for entry in entries[after_submit:after_health]} == {
        ("list_workers", None)
    }
    later = entries[after_health:]
    assert later and all(entry["request_id"] == request_id for entry in later)
    assert {entry["message"] for entry in later} == {"get_job"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The app under a real uvicorn, on a free port: (base URL, API key)."""
    store = SpyStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    app = create_app(Settings(data_dir=tmp_path), store=store, readiness=lambda _endpoint: None)
    key = make_api_key(store)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    # log_config=None: the test's handlers stay in place (serve passes framecast.logs.logging_config).
    instance = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=True, lifespan="on"))
    thread = threading.Thread(target=instance.run, kwargs={"sockets": [listener]})
    thread.start()
    deadline = time.monotonic() + 30
    while not instance.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", key
    finally:
        instance.should_exit = True
        thread.join(timeout=30)
        listener.close()


def test_uvicorn_access_lines_name_the_request(server: tuple[str, str], lines: Lines) -> None:
    url, key = server
    with httpx.Client(base_url=url, headers={"Authorization": f"Key {key}"}, timeout=30) as client:
        submitted = client.post(f"/queue/{WAN}", json={"prompt": "p", "image_url": png_uri()})
        assert submitted.status_code == 200
        request_id = submitted.json()["request_id"]
        assert client.get(f"/queue/{WAN}/requests/{request_id}/status").status_code == 202
        assert client.get("/health").status_code == 200
    access = [entry for entry in lines.entries() if entry["logger"] == "uvicorn.access"]
    assert [(entry["method"], entry["status_code"], entry["request_id"]) for entry in access] == [
        ("POST", 200, request_id),
        ("GET", 202, request_id),
        ("GET", 200, None),
    ]
