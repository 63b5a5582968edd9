"""Logging for every framecast process: text or JSON lines that name the request and worker they concern.

`configure_logging(level, log_format)` is called once by `serve` and by `worker`; `serve` hands the same
configuration to uvicorn (`logging_config`), so its access and error lines come out in the same format.

The request id and the worker id live in context variables, stamped onto each record as it is logged
(`ContextFilter`). Context variables, not module state: every asyncio task and every
`anyio.to_thread.run_sync` call runs in a copy of its caller's context, so a line logged anywhere while a
request is handled (or a job runs) names that request, and concurrent requests never see each other's id.
A plain `threading.Thread` starts with an empty context: bind inside it (`log_context`).
"""

from __future__ import annotations

import datetime
import json
import logging
import logging.config
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal

LogFormat = Literal["text", "json"]

REQUEST_ID: ContextVar[str | None] = ContextVar("framecast_request_id", default=None)
WORKER_ID: ContextVar[str | None] = ContextVar("framecast_worker_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers that have handlers of their own elsewhere; ours propagate them to the root handler instead.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
# What uvicorn's access logger passes as `record.args` ('%s - "%s %s HTTP/%s" %d').
ACCESS_FIELDS = ("client_addr", "method", "path", "http_version", "status_code")
# Attributes every LogRecord has; anything else on a record came from `extra=` and goes into the JSON object.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# Ours are placed first; uvicorn's `color_message` is its message again with ANSI colours.
_SKIPPED_ATTRIBUTES = frozenset({"request_id", "worker_id", "color_message"})


@contextmanager
def log_context(*, request_id: str | None = None, worker_id: str | None = None) -> Iterator[None]:
    """Name `request_id` and/or `worker_id` (those given) on every line logged inside the block.

    Restores the previous values on exit, so nested and consecutive blocks never leak into each other.
    """
    tokens = []
    if request_id is not None:
        tokens.append((REQUEST_ID, REQUEST_ID.set(request_id)))
    if worker_id is not None:
        tokens.append((WORKER_ID, WORKER_ID.set(worker_id)))
    try:
        yield
    finally:
        for variable, token in reversed(tokens):
            variable.reset(token)


@contextmanager
def request_scope() -> Iterator[None]:
    """A fresh request scope: no request id inside (until `bind_request_id`), the previous one after."""
    token = REQUEST_ID.set(None)
    try:
        yield
    finally:
        REQUEST_ID.reset(token)


def bind_request_id(request_id: str) -> None:
    """Name `request_id` on every later line of the current context (a submit that has just made the id).

    Not undone here: the enclosing `request_scope`/`log_context`, or the end of the task, bounds it.
    """
    REQUEST_ID.set(request_id)


def bind_worker_id(worker_id: str) -> None:
    """Name `worker_id` on every later line of the current context (a process that is one worker's engine)."""
    WORKER_ID.set(worker_id)


def current_request_id() -> str | None:
    return REQUEST_ID.get()


class ContextFilter(logging.Filter):
    """Stamps the context's request and worker id on each record, unless the call passed its own in `extra`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        if getattr(record, "worker_id", None) is None:
            record.worker_id = WORKER_ID.get()
        return True


class TextFormatter(logging.Formatter):
    """The classic one-line format, plus ` request_id=…` when the line concerns a request."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        request_id = getattr(record, "request_id", None)
        return f"{line} request_id={request_id}" if request_id else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO-8601 UTC), level, logger, message, request_id (null when none),
    worker_id (when known), exc_info (the traceback as text), and whatever the call passed in `extra`.

    uvicorn's access lines also get their parts as fields (client_addr, method, path, http_version,
    status_code). Values that are not JSON become their `str`.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        worker_id = getattr(record, "worker_id", None)
        if worker_id is not None:
            entry["worker_id"] = worker_id
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            entry.update(zip(ACCESS_FIELDS, record.args, strict=True))
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRIBUTES and name not in _SKIPPED_ATTRIBUTES and not name.startswith("_"):
                entry.setdefault(name, value)
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def logging_config(level: str, log_format: LogFormat) -> dict[str, Any]:
    """A `logging.config.dictConfig` dictionary: one stderr handler on the root logger, uvicorn's loggers
    propagated to it. uvicorn takes this as its `log_config`, so applying it twice is harmless.
    """
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    upper = level.upper()
    return {
        "version": 1,
        # Loggers made at import time (framecast.*) must keep working.
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"framecast": {"()": formatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "framecast",
                "filters": ["context"],
            }
        },
        "root": {"level": upper, "handlers": ["stderr"]},
        "loggers": {name: {"level": upper, "handlers": [], "propagate": True} for name in UVICORN_LOGGERS},
    }


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    """Send every log line of this process to stderr in `log_format`, at `level` and above.

    Python's `warnings` become log lines too (logger `py.warnings`), so a JSON log stays all JSON.
    """
    logging.config.dictConfig(logging_config(level, log_format))
    logging.captureWarnings(True)
