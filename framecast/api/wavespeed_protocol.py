"""WaveSpeed's v3 wire format (protocol.md §5): the `{code, message, data}` envelope and the Task object.

Pure functions only: a `JobRecord` (plus a renderer that turns blob references
into absolute URLs) in, the JSON WaveSpeed's clients read out. The router in
`framecast.api.wavespeed_router` stays a thin translation of HTTP to
`QueueService` calls and back.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from framecast.schemas.files import METADATA_DESCRIPTION
from framecast.store.jobs import JobOutcome, JobRecord, JobStatus

API_PREFIX = "/api/v3"
SUCCESS = "success"
DataT = TypeVar("DataT")
# The fields of an output body that are not output files: `metadata` names the engine (never an output).
NON_OUTPUT_FIELDS = frozenset({"metadata"})
MEDIA_TYPES = ("image", "video", "audio")

TaskStatus = Literal["created", "processing", "completed", "failed"]


class TaskUrls(BaseModel):
    get: str = Field(..., description="GET this URL for the task's current state (the result once completed).")


class TaskTimings(BaseModel):
    inference: int = Field(0, description="Inference time in milliseconds (0 until the task has run).")


class Task(BaseModel):
    """WaveSpeed's prediction object, plus Framecast's `metadata` (which engine ran it) when there is one."""

    id: str = Field(..., description="The task id.")
    model: str = Field(..., description="The model id the task was submitted to.")
    outputs: list[str] = Field(..., description="URLs of the generated files; empty until completed.")
    urls: TaskUrls
    has_nsfw_contents: list[bool] = Field(..., description="One entry per output; always false (no detector).")
    status: TaskStatus
    created_at: str = Field(..., description="ISO 8601, UTC, milliseconds, e.g. 2025-01-01T12:34:56.789Z.")
    error: str = Field(..., description="Why the task failed; empty otherwise.")
    timings: TaskTimings
    metadata: dict[str, Any] | None = Field(None, description=METADATA_DESCRIPTION)


class Envelope(BaseModel, Generic[DataT]):
    """Every WaveSpeed answer: `{"code", "message", "data"}`."""

    code: int = 200
    message: str = SUCCESS
    data: DataT


class ErrorResponse(BaseModel):
    code: int = Field(..., description="The HTTP status code, repeated.")
    message: str
    data: None = None


class MediaUpload(BaseModel):
    type: str = Field(..., description="image, video or audio (file for anything else).")
    download_url: str = Field(..., description="Where the file is; usable as an input URL on this server.")
    filename: str
    size: int


class UploadTicketRequest(BaseModel):
    """What wavespeed 2.0.5's `Client.upload` POSTs to `/api/v3/media/uploads`."""

    model_config = ConfigDict(extra="allow")

    filename: str | None = None
    size: int | None = Field(None, ge=0, description="The file's size in bytes; refused (413) over the limit.")
    content_type: str | None = None


class UploadInstruction(BaseModel):
    method: Literal["PUT"] = "PUT"
    url: str = Field(..., description="PUT the raw bytes here, with `headers`; the URL authorises itself.")
    headers: dict[str, str]


class UploadTicket(BaseModel):
    upload: UploadInstruction
    download_url: str


class WebhookSecret(BaseModel):
    secret: str = Field(..., description="whsec_<key>; the HMAC key is the part after the prefix, as text.")


TaskResponse = Envelope[Task]
MediaUploadResponse = Envelope[MediaUpload]
UploadTicketResponse = Envelope[UploadTicket]
WebhookSecretResponse = Envelope[WebhookSecret]


def envelope(data: Any) -> dict[str, Any]:
    """A success body: `{"code": 200, "message": "success", "data": data}`."""
    return {"code": 200, "message": SUCCESS, "data": data}


def result_url(base_url: str, request_id: str) -> str:
    return f"{base_url}{API_PREFIX}/predictions/{request_id}/result"


def iso_time(seconds: float) -> str:
    """`2025-01-01T12:34:56.789Z`, the format of WaveSpeed's examples."""
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def task_status(record: JobRecord) -> TaskStatus:
    """IN_QUEUE -> created, IN_PROGRESS -> processing, COMPLETED -> completed on a 200 outcome, else failed.

    A cancelled job is failed: WaveSpeed's SDK stops polling on `failed` and reports the error.
    """
    if record.status is JobStatus.IN_QUEUE:
        return "created"
    if record.status is JobStatus.IN_PROGRESS or record.outcome is None:
        return "processing"
    return "completed" if record.outcome.status_code == 200 else "failed"


def output_urls(body: Any) -> list[str]:
    """The file URLs of a (rendered) output body: every top-level File (`{"url": ...}`) or list of Files.

    Plain values (`seed`) and `metadata` are not outputs.
    """
    if not isinstance(body, dict):
        return []
    urls: list[str] = []
    for name, value in body.items():
        if name in NON_OUTPUT_FIELDS:
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict) and isinstance(item.get("url"), str):
                urls.append(item["url"])
    return urls


def error_message(outcome: JobOutcome) -> str:
    """Never empty for a failed outcome: the error, else the body's `detail`, else the status code."""
    if outcome.error:
        return outcome.error
    body = outcome.body
    if isinstance(body, dict) and body.get("detail"):
        detail = body["detail"]
        return detail if isinstance(detail, str) else str(detail)
    return f"The task failed with status {outcome.status_code}"


def build_task(record: JobRecord, *, base_url: str, render: Callable[[Any], Any]) -> Task:
    """The Task for `record`. `render` turns the stored outcome body's blob references into absolute URLs."""
    status = task_status(record)
    outcome = record.outcome
    outputs: list[str] = []
    metadata: dict[str, Any] | None = None
    error = ""
    inference_ms = 0
    if outcome is not None:
        if outcome.inference_time_s is not None:
            inference_ms = round(outcome.inference_time_s * 1000)
        if status == "completed":
            body = render(outcome.body)
            outputs = output_urls(body)
            if isinstance(body, dict) and isinstance(body.get("metadata"), dict):
                metadata = body["metadata"]
        else:
            error = error_message(outcome)
    return Task(
        id=record.request_id,
        model=record.endpoint_id,
        outputs=outputs,
        urls=TaskUrls(get=result_url(base_url, record.request_id)),
        has_nsfw_contents=[False] * len(outputs),
        status=status,
        created_at=iso_time(record.created_at),
        error=error,
        timings=TaskTimings(inference=inference_ms),
        metadata=metadata,
    )


def dump_task(task: Task) -> dict[str, Any]:
    """The task's JSON; `metadata` appears only when the result has one."""
    body = task.model_dump(mode="json")
    if body["metadata"] is None:
        del body["metadata"]
    return body


def webhook_payload(record: JobRecord, *, base_url: str, render: Callable[[Any], Any]) -> dict[str, Any]:
    """WaveSpeed's webhook body: the bare task (no envelope) plus the validated `input`."""
    return {**dump_task(build_task(record, base_url=base_url, render=render)), "input": record.payload.get("input")}


def validation_message(errors: Sequence[dict[str, Any]]) -> str:
    """One line naming every bad field: `Invalid input: prompt: Field required; num_frames: ...`."""
    parts = []
    for entry in errors:
        location = [str(part) for part in entry.get("loc", ()) if part != "body"]
        field = ".".join(location) or "body"
        parts.append(f"{field}: {entry.get('msg', 'invalid')}")
    return "Invalid input: " + "; ".join(parts)


def guess_content_type(filename: str | None, content_type: str | None) -> str | None:
    """The declared content type, else one guessed from the file name (None when neither says)."""
    if content_type:
        return content_type
    if filename:
        return mimetypes.guess_type(filename)[0]
    return None


def media_kind(content_type: str) -> str:
    """WaveSpeed's upload `type`: image, video or audio; `file` for anything else."""
    major = content_type.split("/", 1)[0]
    return major if major in MEDIA_TYPES else "file"
