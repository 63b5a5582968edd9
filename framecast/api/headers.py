"""fal request headers and query flags."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request

from framecast.api.auth import api_key_id
from framecast.api.errors import BadHeaderError
from framecast.service.queue import InvalidInputError, SubmitOptions
from framecast.store.jobs import Priority

TRUE_FLAGS = {"1", "true", "yes", "on"}
FALSE_FLAGS = {"0", "false", "no", "off", ""}


def parse_flag(value: str | None, *, name: str) -> bool:
    """fal-client sends `logs=true|false`, @fal-ai/client `logs=1|0`; accept both."""
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in TRUE_FLAGS:
        return True
    if lowered in FALSE_FLAGS:
        return False
    raise BadHeaderError(f"{name} must be one of 1, 0, true, false (got {value!r})")


def parse_priority(value: str | None) -> Priority:
    if value is None:
        return Priority.NORMAL
    try:
        return {"normal": Priority.NORMAL, "low": Priority.LOW}[value.strip().lower()]
    except KeyError:
        raise BadHeaderError(f"X-Fal-Queue-Priority must be 'normal' or 'low' (got {value!r})") from None


def parse_start_timeout(request: Request) -> float | None:
    """`X-Fal-Request-Start-Timeout`, or the deprecated `X-Fal-Request-Timeout` (seconds, > 1)."""
    for name in ("x-fal-request-start-timeout", "x-fal-request-timeout"):
        value = request.headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            raise BadHeaderError(f"{name} must be a number of seconds (got {value!r})") from None
        if not seconds > 0 or seconds != seconds or seconds == float("inf"):
            raise BadHeaderError(f"{name} must be a positive number of seconds (got {value!r})")
        return seconds
    return None


MAX_WEBHOOK_URL_CHARS = 2048


def parse_webhook_url(value: str | None, *, name: str = "fal_webhook") -> str | None:
    """An absolute http(s) URL, or a `BadHeaderError` now rather than a delivery that can never work.

    Where it points is checked at each delivery (public addresses only), since DNS can change meanwhile.
    """
    if value is None:
        return None
    parsed = urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname or len(value) > MAX_WEBHOOK_URL_CHARS:
        raise BadHeaderError(f"{name} must be an absolute http(s) URL of at most {MAX_WEBHOOK_URL_CHARS} characters")
    return value


def submit_options(request: Request, *, base_url: str, allow_test_faults: bool) -> SubmitOptions:
    return SubmitOptions(
        priority=parse_priority(request.headers.get("x-fal-queue-priority")),
        start_timeout_s=parse_start_timeout(request),
        base_url=base_url,
        webhook_url=parse_webhook_url(request.query_params.get("fal_webhook")),
        test_fault=request.headers.get("x-framecast-test-fault") if allow_test_faults else None,
        submitted_by=api_key_id(request),
    )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def read_json_body(request: Request) -> Any:
    """The raw input JSON; malformed JSON is a 422 in FastAPI's shape, its message saying what is wrong.

    Stricter than Python's `json`: NaN and Infinity are refused (they are not JSON, and no response could echo
    them), and so is nesting deeper than the parser's recursion limit.
    """
    body = await request.body()
    try:
        return json.loads(body, parse_constant=_refuse_constant) if body else {}
    except json.JSONDecodeError as error:
        problem, position = error.msg, error.pos
    except UnicodeDecodeError as error:
        problem, position = "the body is not UTF-8 text", error.start
    except ValueError as error:
        problem, position = str(error), 0
    except RecursionError:
        problem, position = "the JSON is nested too deeply", 0
    raise InvalidInputError(
        [{"loc": ["body", position], "msg": f"JSON decode error: {problem}", "type": "json_invalid", "input": {}}]
    )
