"""fal's queue API under `/queue` (protocol.md §1.4)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel

from framecast.api.auth import require_api_key
from framecast.api.errors import FalError, fal_errors
from framecast.api.headers import parse_flag, read_json_body, submit_options
from framecast.api.protocol import QueueStatus, SubmitResponse, app_path, dump, status_body, submit_body
from framecast.api.state import AppState, app_state, base_url
from framecast.service.queue import StatusView
from framecast.store.jobs import CancelOutcome, JobStatus

QUEUE_PREFIX = "/queue"
LOGS_QUERY = Query(None, description="Include logs: 1, 0, true or false.")

router = APIRouter(
    prefix=QUEUE_PREFIX, tags=["queue"], dependencies=[Depends(require_api_key)], responses=fal_errors(401, 404)
)
State = Annotated[AppState, Depends(app_state)]
NOT_FOUND = {"detail": "Request not found"}


class CancelResponse(BaseModel):
    status: str


STATUS_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": QueueStatus, "description": "Still IN_QUEUE or IN_PROGRESS; 200 once COMPLETED."},
    **fal_errors(400),
}
STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-sent events: `data: <status JSON>` per change, until COMPLETED.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    **fal_errors(400),
}
CANCEL_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": CancelResponse, "description": "`CANCELLATION_REQUESTED`."},
    400: {"model": CancelResponse, "description": "`ALREADY_COMPLETED`."},
    # A path no route matches (a newline in the app, say) is the router's own `{"detail": "Not Found"}`.
    404: {"model": CancelResponse | FalError, "description": "`NOT_FOUND`."},
}
RESULT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The endpoint's output, unwrapped.", "content": {"application/json": {"schema": {}}}},
    **fal_errors(400),
    "default": {
        "model": FalError,
        "description": "A failed request: the status code and body it failed with (422 bad input, 499 cancelled, "
        "500 runner error, 502 upstream error, 503 worker lost, 504 start timeout), as fal does.",
    },
}


def queue_base(request: Request) -> str:
    return base_url(request) + QUEUE_PREFIX


def _check_app(record_endpoint: str, app: str) -> bool:
    """The clients address a request by owner/alias; fal's per-endpoint OpenAPI uses the full endpoint id."""
    return app in (app_path(record_endpoint), record_endpoint)


@router.get("/{app:path}/requests/{request_id}/status", response_model=QueueStatus, responses=STATUS_RESPONSES)
async def get_status(
    request: Request, state: State, app: str, request_id: str, logs: str | None = LOGS_QUERY
) -> JSONResponse:
    view = await state.queue.status(request_id, with_logs=parse_flag(logs, name="logs"), base_url=base_url(request))
    if not _check_app(view.record.endpoint_id, app):
        return JSONResponse(NOT_FOUND, status_code=404)
    code = 200 if view.record.status is JobStatus.COMPLETED else 202
    return JSONResponse(
        dump(status_body(view, queue_base_url=queue_base(request))),
        status_code=code,
        headers={"x-fal-request-id": request_id},
    )


@router.get("/{app:path}/requests/{request_id}/status/stream", response_class=Response, responses=STREAM_RESPONSES)
async def stream_status(
    request: Request, state: State, app: str, request_id: str, logs: str | None = LOGS_QUERY
) -> Response:
    """Server-sent events: one `data:` status object per change, keep-alive comments, closed after COMPLETED."""
    with_logs = parse_flag(logs, name="logs")
    files_base = base_url(request)
    first = await state.queue.status(request_id, with_logs=with_logs, base_url=files_base)
    if not _check_app(first.record.endpoint_id, app):
        return JSONResponse(NOT_FOUND, status_code=404)
    settings = state.settings
    base = queue_base(request)

    async def events() -> AsyncIterator[str]:
        view: StatusView = first
        last_sent: str | None = None
        last_write = time.monotonic()
        while True:
            body = json.dumps(dump(status_body(view, queue_base_url=base)))
            if body != last_sent:
                yield f"data: {body}\n\n"
                last_sent = body
                last_write = time.monotonic()
            if view.record.status is JobStatus.COMPLETED:
                return
            if time.monotonic() - last_write >= settings.sse_keepalive_s:
                yield ": keep-alive\n\n"
                last_write = time.monotonic()
            if await request.is_disconnected():
                return
            await state.changes.wait_for_events(request_id, settings.poll_interval_s)
            view = await state.queue.status(request_id, with_logs=with_logs, base_url=files_base)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "x-fal-request-id": request_id},
    )


@router.put(
    "/{app:path}/requests/{request_id}/cancel",
    status_code=202,
    response_model=CancelResponse,
    responses=CANCEL_RESPONSES,
)
async def cancel(state: State, app: str, request_id: str) -> JSONResponse:
    record = await state.queue.find(request_id)
    if record is None or not _check_app(record.endpoint_id, app):
        return JSONResponse({"status": CancelOutcome.NOT_FOUND.value}, status_code=404)
    outcome = await state.queue.cancel(request_id)
    code = {CancelOutcome.CANCELLATION_REQUESTED: 202, CancelOutcome.ALREADY_COMPLETED: 400}.get(outcome, 404)
    return JSONResponse({"status": outcome.value}, status_code=code)


@router.get("/{app:path}/requests/{request_id}", response_class=Response, responses=RESULT_RESPONSES)
async def get_result(request: Request, state: State, app: str, request_id: str) -> JSONResponse:
    record = await state.queue.get(request_id)
    if not _check_app(record.endpoint_id, app):
        return JSONResponse(NOT_FOUND, status_code=404)
    result = await state.queue.result(request_id, base_url=base_url(request))
    return JSONResponse(
        result.body, status_code=result.status_code, headers={**result.headers, "x-fal-request-id": request_id}
    )


# Documented per endpoint in the OpenAPI document (framecast.api.openapi), with its input schema.
@router.post("/{endpoint_id:path}", response_model=SubmitResponse, status_code=200, include_in_schema=False)
async def submit(request: Request, state: State, endpoint_id: str) -> JSONResponse:
    """Queue a request. The body is the endpoint's input JSON, not wrapped."""
    state.queue.endpoint(endpoint_id)
    raw_input = await read_json_body(request)
    options = submit_options(request, base_url=base_url(request), allow_test_faults=state.settings.test_faults)
    record = await state.queue.submit(endpoint_id, raw_input, options)
    position = await state.queue.queue_position(record)
    body = submit_body(record, queue_base_url=queue_base(request), queue_position=position)
    return JSONResponse(dump(body), headers={"x-fal-request-id": record.request_id})
