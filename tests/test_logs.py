"""framecast.logs: the formatters, the request-id context and the process-wide configuration."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator

import anyio
import anyio.to_thread
import pytest

from framecast.logs import (
    ContextFilter,
    JsonFormatter,
    TextFormatter,
    bind_request_id,
    current_request_id,
    log_context,
    request_scope,
)


class Lines(logging.Handler):
    """Collects the formatted lines, as the stderr handler would write them."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.addFilter(ContextFilter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def objects(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.lines]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def logger() -> logging.Logger:
    instance = logging.getLogger("tests.logs")
    instance.setLevel(logging.DEBUG)
    instance.propagate = False
    return instance


@pytest.fixture
def json_lines(logger: logging.Logger) -> Iterator[Lines]:
    handler = Lines(JsonFormatter())
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture
def text_lines(logger: logging.Logger) -> Iterator[Lines]:
    handler = Lines(TextFormatter())
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def test_a_json_line_has_the_documented_fields(logger: logging.Logger, json_lines: Lines) -> None:
    with log_context(request_id="req-1", worker_id="gpu1:7:abc"):
        logger.warning("claimed %s", "it", extra={"attempt": 2})
    logger.info("no request")
    [first, second] = json_lines.objects()
    assert first["level"] == "WARNING" and first["logger"] == "tests.logs" and first["message"] == "claimed it"
    assert (first["request_id"], first["worker_id"], first["attempt"]) == ("req-1", "gpu1:7:abc", 2)
    stamp = str(first["time"])
    assert stamp.endswith("Z")
    parsed = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert parsed.utcoffset() == datetime.timedelta(0)
    assert abs(parsed.timestamp() - datetime.datetime.now(datetime.UTC).timestamp()) < 60
    # request_id is on every line (null outside a request); worker_id only where there is one.
    assert second["request_id"] is None and "worker_id" not in second
    assert all("\n" not in line for line in json_lines.lines)


def test_a_json_line_carries_the_traceback_as_text(logger: logging.Logger, json_lines: Lines) -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        logger.exception("it failed")
    [entry] = json_lines.objects()
    assert entry["message"] == "it failed" and entry["level"] == "ERROR"
    assert "Traceback" in str(entry["exc_info"]) and "ValueError: bad" in str(entry["exc_info"])
    assert len(json_lines.lines) == 1, "one line per record, the traceback escaped inside it"


def test_values_json_cannot_hold_become_text(logger: logging.Logger, json_lines: Lines) -> None:
    logger.info("odd", extra={"where": {1, 2}.__class__})
    assert json_lines.objects()[0]["where"] == "<class 'set'>"


def test_uvicorn_access_lines_get_their_parts_as_fields(json_lines: Lines) -> None:
    access = logging.getLogger("uvicorn.access")
    level = access.level
    access.setLevel(logging.INFO)
    access.addHandler(json_lines)
    try:
        with log_context(request_id="req-9"):
            access.info('%s - "%s %s HTTP/%s" %d', "10.0.0.1:5000", "GET", "/queue/x/requests/req-9", "1.1", 202)
    finally:
        access.removeHandler(json_lines)
        access.setLevel(level)
    [entry] = json_lines.objects()
    assert entry["message"] == '10.0.0.1:5000 - "GET /queue/x/requests/req-9 HTTP/1.1" 202'
    assert (entry["method"], entry["path"], entry["status_code"], entry["request_id"]) == (
        "GET",
        "/queue/x/requests/req-9",
        202,
        "req-9",
    )


def test_text_lines_name_the_request_when_there_is_one(logger: logging.Logger, text_lines: Lines) -> None:
    logger.info("outside")
    with log_context(request_id="req-2"):
        try:
            raise KeyError("k")
        except KeyError:
            logger.exception("inside")
    assert text_lines.lines[0].endswith(" INFO tests.logs: outside")
    first_line, *traceback = text_lines.lines[1].splitlines()
    assert first_line.endswith(" ERROR tests.logs: inside request_id=req-2")
    assert traceback[0].startswith("Traceback") and traceback[-1] == "KeyError: 'k'"


def test_an_id_passed_in_extra_wins(logger: logging.Logger, json_lines: Lines) -> None:
    with log_context(request_id="ambient"):
        logger.info("about another job", extra={"request_id": "explicit"})
    assert json_lines.objects()[0]["request_id"] == "explicit"


def test_contexts_nest_and_restore() -> None:
    assert current_request_id() is None
    with log_context(request_id="outer"):
        with log_context(request_id="inner"):
            assert current_request_id() == "inner"
        assert current_request_id() == "outer"
        with request_scope():
            assert current_request_id() is None
            bind_request_id("bound")
            assert current_request_id() == "bound"
        assert current_request_id() == "outer"
    assert current_request_id() is None


def test_a_block_that_raises_still_restores() -> None:
    with pytest.raises(RuntimeError), log_context(request_id="doomed"):
        raise RuntimeError
    assert current_request_id() is None


@pytest.mark.anyio
async def test_each_asyncio_task_keeps_its_own_request_id(logger: logging.Logger, json_lines: Lines) -> None:
    both_bound = asyncio.Barrier(2)

    async def handle(request_id: str) -> None:
        with request_scope():
            bind_request_id(request_id)
            # Both are bound before either logs: a shared variable would show one id twice.
            await both_bound.wait()
            logger.info("handling %s", request_id)
            await asyncio.sleep(0)
            logger.info("still %s", request_id)

    await asyncio.gather(handle("a"), handle("b"))
    assert current_request_id() is None
    entries = json_lines.objects()
    assert len(entries) == 4
    assert all(str(entry["message"]).endswith(str(entry["request_id"])) for entry in entries)


@pytest.mark.anyio
async def test_the_request_id_reaches_anyio_worker_threads_and_tasks(logger: logging.Logger, json_lines: Lines) -> None:
    with log_context(request_id="req-3"):
        await anyio.to_thread.run_sync(lambda: logger.info("in a worker thread"))
        await asyncio.create_task(asyncio.to_thread(logger.info, "in a task's thread"))

    def bare_thread() -> None:
        logger.info("in a plain thread")

    with log_context(request_id="req-4"):
        thread = threading.Thread(target=bare_thread)
        thread.start()
        thread.join()
    ids = [(entry["message"], entry["request_id"]) for entry in json_lines.objects()]
    assert ids == [
        ("in a worker thread", "req-3"),
        ("in a task's thread", "req-3"),
        # threading.Thread starts with an empty context: such threads bind their own (framecast.worker does).
        ("in a plain thread", None),
    ]


@pytest.mark.anyio
async def test_a_bind_in_a_worker_thread_does_not_leak_back() -> None:
    with request_scope():
        await anyio.to_thread.run_sync(lambda: bind_request_id("from the thread"))
        assert current_request_id() is None


def run_python(code: str) -> list[str]:
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert completed.stdout == ""
    return completed.stderr.splitlines()


def test_configure_logging_writes_json_lines_to_stderr_for_every_logger() -> None:
    lines = run_python(
        "import logging\n"
        "early = logging.getLogger('framecast.early')  # made before configuring, as module loggers are\n"
        "from framecast.logs import configure_logging, log_context, logging_config\n"
        "import logging.config\n"
        "configure_logging('info', 'json')\n"
        "# uvicorn applies the same configuration again (its log_config)\n"
        "logging.config.dictConfig(logging_config('info', 'json'))\n"
        "with log_context(request_id='r-1', worker_id='w-1'):\n"
        "    early.info('from framecast')\n"
        "    logging.getLogger('uvicorn.error').info('Started server process')\n"
        "    logging.getLogger('uvicorn.access').info('%s - \"%s %s HTTP/%s\" %d', 'c', 'GET', '/x', '1.1', 200)\n"
        "logging.getLogger('anything').debug('below the level')\n"
    )
    entries = [json.loads(line) for line in lines]
    assert [(entry["logger"], entry["request_id"], entry["worker_id"]) for entry in entries] == [
        ("framecast.early", "r-1", "w-1"),
        ("uvicorn.error", "r-1", "w-1"),
        ("uvicorn.access", "r-1", "w-1"),
    ]
    assert entries[2]["status_code"] == 200


def test_configure_logging_text_mode() -> None:
    lines = run_python(
        "import logging\n"
        "from framecast.logs import configure_logging, log_context\n"
        "configure_logging('warning', 'text')\n"
        "log = logging.getLogger('framecast.x')\n"
        "log.info('hidden')\n"
        "with log_context(request_id='r-2'):\n"
        "    log.warning('shown')\n"
    )
    assert len(lines) == 1 and lines[0].endswith(" WARNING framecast.x: shown request_id=r-2")
