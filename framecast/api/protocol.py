"""fal's queue wire format: the JSON bodies the routers send."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, Field

from framecast.service.queue import StatusView
from framecast.store.jobs import JobEvent, JobRecord, JobStatus


class LogEntry(BaseModel):
    message: str
    level: Literal["STDERR", "STDOUT", "ERROR", "INFO", "WARN", "DEBUG"] = "INFO"
    source: Literal["USER"] = "USER"
    timestamp: str


class QueueStatus(BaseModel):
    status: Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    request_id: str
    response_url: str
    status_url: str
    cancel_url: str
    queue_position: int | None = Field(None, description="Requests ahead of this one (IN_QUEUE only).")
    logs: list[LogEntry] | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None
    progress: dict[str, Any] | None = Field(
        None, description="Framecast: the latest step, total_steps, eta_s and fraction while IN_PROGRESS."
    )


class SubmitResponse(QueueStatus):
    gateway_request_id: str


def app_path(endpoint_id: str) -> str:
    """fal's status, result and cancel URLs use only owner/alias; the endpoint's subpath is dropped."""
    return "/".join(endpoint_id.split("/")[:2])


class RequestUrls(TypedDict):
    response_url: str
    status_url: str
    cancel_url: str


def request_urls(queue_base_url: str, record: JobRecord) -> RequestUrls:
    response_url = f"{queue_base_url}/{app_path(record.endpoint_id)}/requests/{record.request_id}"
    return RequestUrls(
        response_url=response_url, status_url=response_url + "/status", cancel_url=response_url + "/cancel"
    )


def iso_timestamp(seconds: float) -> str:
    """Unix seconds as ISO 8601 in UTC with a `Z`, as fal writes its timestamps."""
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat().replace("+00:00", "Z")


def log_entry(event: JobEvent) -> LogEntry:
    timestamp = iso_timestamp(event.created_at)
    level = event.level if event.level in ("STDERR", "STDOUT", "ERROR", "INFO", "WARN", "DEBUG") else "INFO"
    return LogEntry(message=event.message, level=level, timestamp=timestamp)


def status_body(view: StatusView, *, queue_base_url: str) -> QueueStatus:
    record = view.record
    body = QueueStatus(
        status=record.status.value,
        request_id=record.request_id,
        logs=None if view.logs is None else [log_entry(event) for event in view.logs],
        **request_urls(queue_base_url, record),
    )
    if record.status is JobStatus.IN_QUEUE:
        body.queue_position = view.queue_position
    elif record.status is JobStatus.IN_PROGRESS:
        body.progress = record.progress
    else:
        outcome = record.outcome
        body.metrics = {"inference_time": outcome.inference_time_s if outcome else None}
        if outcome is not None and outcome.status_code >= 400:
            body.error = outcome.error
            body.error_type = outcome.error_type
    return body


def submit_body(record: JobRecord, *, queue_base_url: str, queue_position: int) -> SubmitResponse:
    return SubmitResponse(
        status="IN_QUEUE",
        request_id=record.request_id,
        gateway_request_id=record.request_id,
        queue_position=queue_position,
        logs=None,
        metrics={},
        **request_urls(queue_base_url, record),
    )


def dump(model: BaseModel) -> dict[str, Any]:
    """The wire JSON: keys that fal sends as null stay null; our additions are dropped when empty."""
    body = model.model_dump(mode="json")
    for optional in ("progress", "queue_position", "error", "error_type"):
        if body.get(optional) is None and optional not in _ALWAYS[body["status"]]:
            body.pop(optional, None)
    return body


_ALWAYS: dict[str, set[str]] = {
    "IN_QUEUE": {"queue_position"},
    "IN_PROGRESS": set(),
    "COMPLETED": {"error", "error_type"},
}


def fal_webhook_payload(
    record: JobRecord, base_url: str, render: Callable[[Any], Any], *, max_payload_bytes: int
) -> dict[str, Any]:
    """fal's webhook body (protocol.md §4): OK with the output, or ERROR with the error body as payload.

    A payload over `max_payload_bytes` is sent as `payload: null` with `payload_error`, as fal does for
    payloads it cannot send; the result itself stays available at the request's response URL.
    """
    outcome = record.outcome
    if outcome is None:
        raise ValueError(f"{record.request_id} has not finished")
    message: dict[str, Any] = {"request_id": record.request_id, "gateway_request_id": record.request_id}
    if outcome.status_code == 200:
        message["status"] = "OK"
    else:
        message.update(status="ERROR", error=f"Invalid status code: {outcome.status_code}")
    payload = render(outcome.body)
    size = len(json.dumps(payload, separators=(",", ":")).encode())
    if size > max_payload_bytes:
        response_url = request_urls(f"{base_url}/queue", record)["response_url"]
        message["payload"] = None
        message["payload_error"] = (
            f"The payload is {size} bytes, over this server's webhook limit of {max_payload_bytes} bytes; "
            f"GET it from {response_url}"
        )
    else:
        message["payload"] = payload
    return message
