"""`GET /api/requests`: each API key's recent requests, kept by the server (the playground's history)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from framecast.api.auth import api_key_id, require_api_key
from framecast.api.errors import fal_errors
from framecast.api.protocol import iso_timestamp, request_urls
from framecast.api.state import AppState, app_state, base_url
from framecast.store.jobs import JobRecord

router = APIRouter(prefix="/api", tags=["history"], dependencies=[Depends(require_api_key)], responses=fal_errors(401))
State = Annotated[AppState, Depends(app_state)]
# History shows inputs; a data URI can be megabytes, and the file itself is not needed to reopen a request.
MAX_SHOWN_CHARS = 120


class HistoryEntry(BaseModel):
    request_id: str
    endpoint_id: str
    status: str
    error: str | None
    error_type: str | None
    created_at: str
    finished_at: str | None
    input: dict[str, Any] = Field(description="The validated input; data URIs are shortened.")
    status_url: str
    response_url: str
    cancel_url: str


class History(BaseModel):
    requests: list[HistoryEntry]


def _shorten(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("data:") and len(value) > MAX_SHOWN_CHARS:
        return f"{value[:MAX_SHOWN_CHARS]}… ({len(value)} characters)"
    return value


def history_entry(record: JobRecord, *, queue_base_url: str) -> HistoryEntry:
    outcome = record.outcome
    failed = outcome is not None and outcome.status_code >= 400
    return HistoryEntry(
        request_id=record.request_id,
        endpoint_id=record.endpoint_id,
        status=record.status.value,
        error=outcome.error if failed and outcome else None,
        error_type=outcome.error_type if failed and outcome else None,
        created_at=iso_timestamp(record.created_at),
        finished_at=None if record.finished_at is None else iso_timestamp(record.finished_at),
        input={name: _shorten(value) for name, value in record.payload.get("input", {}).items()},
        **request_urls(queue_base_url, record),
    )


@router.get("/requests", response_model=History)
async def list_requests(
    request: Request, state: State, limit: int = Query(50, ge=1, le=500, description="How many, newest first.")
) -> History:
    """The newest requests made with this API key (every request when the server runs --no-auth)."""
    records = await state.queue.history(submitted_by=api_key_id(request), limit=limit)
    queue_base = base_url(request) + "/queue"
    return History(requests=[history_entry(record, queue_base_url=queue_base) for record in records])
