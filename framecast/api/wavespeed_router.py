"""WaveSpeed's v3 API under `/api/v3` (protocol.md §5), for the unmodified `wavespeed` SDK.

- `POST /api/v3/{model_id}`: flat model params; `?webhook=<url>`; `"enable_sync_mode": true`
  answers with the finished task. Every endpoint of the catalogue is served, WaveSpeed's
  `wavespeed-ai/framepack` and fal's ids alike.
- `GET /api/v3/predictions/{id}` and `.../result`: the task's current state.
- `POST /api/v3/media/upload/binary` (multipart `file`) and `POST /api/v3/media/uploads`
  (the SDK's ticket, then a PUT to `/storage/upload/{token}`).
- `GET /api/v3/webhook/secret`: the HMAC secret that signs WaveSpeed-format webhooks.

Every answer is WaveSpeed's envelope `{"code", "message", "data"}` with a matching HTTP
status. A failed task is not an HTTP error: it is HTTP 200 with `data.status` "failed".
The service's exceptions are caught here, because the app-wide handlers answer in fal's shape.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from framecast.api.auth import api_key_id, require_api_key
from framecast.api.errors import wavespeed_error
from framecast.api.headers import read_json_body
from framecast.api.state import AppState, app_state, base_url
from framecast.api.wavespeed_protocol import (
    ErrorResponse,
    MediaUploadResponse,
    TaskResponse,
    UploadTicketRequest,
    UploadTicketResponse,
    WebhookSecretResponse,
    build_task,
    dump_task,
    envelope,
    guess_content_type,
    media_kind,
    validation_message,
    webhook_payload,
)
from framecast.service.queue import (
    EndpointUnavailableError,
    InvalidInputError,
    RequestNotFoundError,
    SubmitOptions,
    UnknownEndpointError,
)
from framecast.service.uploads import UploadTooLargeError
from framecast.service.webhooks import WAVESPEED_FORMAT, WAVESPEED_SECRET_NAME, WAVESPEED_SECRET_PREFIX
from framecast.store.jobs import JobRecord

State = Annotated[AppState, Depends(app_state)]
SYNC_MODE_FIELD = "enable_sync_mode"
UPLOAD_CHUNK_BYTES = 1024 * 1024
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": description}
    for code, description in (
        (400, "Invalid input; the message names every bad field"),
        (401, "Missing or invalid API key"),
        (404, "Unknown model or task"),
        (413, "Upload too large"),
        (503, "No worker can run this model now"),
    )
}

# The bodies are read by hand (to answer errors in the envelope), so OpenAPI is told their shape here.
BINARY_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            }
        },
    }
}
TICKET_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": UploadTicketRequest.model_json_schema()}},
    }
}
SUBMIT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "The model's params, flat (each model's schema: "
                    "GET /api/openapi/queue/openapi.json?endpoint_id=<id>), plus optional `enable_sync_mode: true` "
                    "to answer with the finished task.",
                    "additionalProperties": True,
                }
            }
        },
    }
}


class WaveSpeedError(Exception):
    """An error answered as `{"code": status, "message": message, "data": null}`."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


@dataclass(frozen=True)
class SubmitRequest:
    params: Any
    sync: bool


def _from_service_error(error: Exception) -> WaveSpeedError:
    if isinstance(error, InvalidInputError):
        return WaveSpeedError(400, validation_message(error.errors))
    if isinstance(error, UnknownEndpointError):
        return WaveSpeedError(404, f"Model {error.endpoint_id!r} is not served here")
    if isinstance(error, EndpointUnavailableError):
        return WaveSpeedError(503, str(error))
    if isinstance(error, RequestNotFoundError):
        return WaveSpeedError(404, "Task not found")
    raise TypeError(f"not a service error: {error!r}")


SERVICE_ERRORS = (InvalidInputError, UnknownEndpointError, EndpointUnavailableError, RequestNotFoundError)


def _error_response(error: WaveSpeedError) -> JSONResponse:
    return wavespeed_error(error.status_code, error.message)


def _task_body(state: AppState, record: JobRecord, base: str) -> dict[str, Any]:
    task = build_task(record, base_url=base, render=lambda body: state.queue.render(body, base_url=base))
    return envelope(dump_task(task))


def wavespeed_webhook_payload(record: JobRecord, base_url: str, render: Callable[[Any], Any]) -> dict[str, Any]:
    """WaveSpeed's webhook body: the bare task object plus `input`."""
    return webhook_payload(record, base_url=base_url, render=render)


async def _read_submit(request: Request) -> SubmitRequest:
    """The model params with `enable_sync_mode` taken out (it is WaveSpeed's option, not the model's)."""
    params = await read_json_body(request)
    sync = False
    if isinstance(params, dict) and SYNC_MODE_FIELD in params:
        value = params.pop(SYNC_MODE_FIELD)
        if value is not None and not isinstance(value, bool):
            raise WaveSpeedError(400, f"Invalid input: {SYNC_MODE_FIELD}: must be a boolean (got {value!r})")
        sync = bool(value)
    return SubmitRequest(params=params, sync=sync)


def _webhook_url(request: Request) -> str | None:
    url = request.query_params.get("webhook")
    if url is None or url == "":
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise WaveSpeedError(400, f"Invalid webhook: must be an absolute http(s) URL (got {url!r})")
    return url


async def _wait_finished(request: Request, state: AppState, request_id: str) -> JobRecord | None:
    """The finished record, or None when the client hung up first. The task itself keeps running then,
    as on WaveSpeed: its id is in the webhook and the predictions API."""
    waiter = asyncio.ensure_future(
        state.queue.wait_until_finished(request_id, poll_interval_s=state.settings.poll_interval_s)
    )
    try:
        while not waiter.done():
            if await request.is_disconnected():
                return None
            await asyncio.wait({waiter}, timeout=1.0)
        return waiter.result()
    finally:
        if not waiter.done():
            waiter.cancel()


def build_wavespeed_router() -> APIRouter:
    router = APIRouter(prefix="/api/v3", tags=["wavespeed"], dependencies=[Depends(require_api_key)], responses=ERRORS)

    # The fixed paths come before the catch-all submit route, which would otherwise take them as model ids.
    @router.post("/media/upload/binary", response_model=MediaUploadResponse, openapi_extra=BINARY_UPLOAD_BODY)
    async def upload_binary(request: Request, state: State) -> JSONResponse:
        """Upload one file (multipart field `file`); the download URL is usable as an input on this server."""
        try:
            form = await request.form(max_files=1, max_fields=16)
        except HTTPException as error:
            # Starlette's multipart parse errors are 400s; anything else (the body limit's 413) is not ours.
            if error.status_code != 400:
                raise
            return wavespeed_error(400, f"Invalid upload: {error.detail}")
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                return wavespeed_error(400, "Invalid upload: send the file as the multipart/form-data field `file`")
            content_type = guess_content_type(upload.filename, upload.content_type)
            stored = await state.uploads.store(
                _chunks(upload), file_name=upload.filename, content_type=content_type, base_url=base_url(request)
            )
        finally:
            await form.close()
        data = {
            "type": media_kind(stored.content_type),
            "download_url": stored.file_url,
            "filename": stored.file_name,
            "size": stored.size_bytes,
        }
        return JSONResponse(envelope(data))

    @router.post("/media/uploads", response_model=UploadTicketResponse, openapi_extra=TICKET_BODY)
    async def upload_ticket(request: Request, state: State) -> JSONResponse:
        """wavespeed 2.0.5's upload: where to PUT the bytes (no key needed there) and the file's URL."""
        try:
            raw = await read_json_body(request)
            body = UploadTicketRequest.model_validate(raw)
        except InvalidInputError as error:
            return wavespeed_error(400, validation_message(error.errors))
        except ValidationError as error:
            return wavespeed_error(400, validation_message([dict(entry) for entry in error.errors(include_url=False)]))
        if body.size is not None and body.size > state.settings.max_upload_bytes:
            return wavespeed_error(413, str(UploadTooLargeError(state.settings.max_upload_bytes)))
        ticket = state.uploads.create_ticket(
            file_name=body.filename,
            content_type=guess_content_type(body.filename, body.content_type),
            base_url=base_url(request),
        )
        upload = {"method": "PUT", "url": ticket.upload_url, "headers": {"Content-Type": ticket.content_type}}
        return JSONResponse(envelope({"upload": upload, "download_url": ticket.file_url}))

    @router.get("/webhook/secret", response_model=WebhookSecretResponse)
    async def webhook_secret(state: State) -> JSONResponse:
        """The secret signing this server's WaveSpeed webhooks: `whsec_` + the HMAC key (used as text)."""
        secret = await anyio.to_thread.run_sync(
            lambda: state.credentials.secret(WAVESPEED_SECRET_NAME, now=time.time())
        )
        return JSONResponse(envelope({"secret": WAVESPEED_SECRET_PREFIX + secret}))

    @router.get("/predictions/{request_id}/result", response_model=TaskResponse)
    async def get_result(request: Request, state: State, request_id: str) -> JSONResponse:
        """The task's current state; outputs once completed. A failed task is HTTP 200, status failed."""
        return await _get_task(request, state, request_id)

    @router.get("/predictions/{request_id}", response_model=TaskResponse)
    async def get_prediction(request: Request, state: State, request_id: str) -> JSONResponse:
        """The same as `.../result`."""
        return await _get_task(request, state, request_id)

    @router.post("/{model_id:path}", response_model=TaskResponse, openapi_extra=SUBMIT_BODY)
    async def submit(request: Request, state: State, model_id: str) -> JSONResponse:
        """Queue a task. The body is the model's params, not wrapped; `enable_sync_mode: true` waits for the end."""
        try:
            state.queue.endpoint(model_id)
            submission = await _read_submit(request)
            base = base_url(request)
            options = SubmitOptions(
                base_url=base,
                webhook_url=_webhook_url(request),
                webhook_format=WAVESPEED_FORMAT,
                test_fault=request.headers.get("x-framecast-test-fault") if state.settings.test_faults else None,
                submitted_by=api_key_id(request),
            )
            record = await state.queue.submit(model_id, submission.params, options)
        except WaveSpeedError as error:
            return _error_response(error)
        except SERVICE_ERRORS as error:
            return _error_response(_from_service_error(error))
        if submission.sync:
            finished = await _wait_finished(request, state, record.request_id)
            if finished is None:
                return wavespeed_error(499, "Client disconnected; the task goes on")
            record = finished
        return JSONResponse(_task_body(state, record, base))

    return router


async def _get_task(request: Request, state: AppState, request_id: str) -> JSONResponse:
    try:
        record = await state.queue.get(request_id)
    except RequestNotFoundError as error:
        return _error_response(_from_service_error(error))
    return JSONResponse(_task_body(state, record, base_url(request)))


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(UPLOAD_CHUNK_BYTES):
        yield chunk
