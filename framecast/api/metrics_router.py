"""`GET /metrics`: Prometheus metrics (docs/operations.md).

Needs an API key like the rest of the API (Prometheus sends one with `authorization: {credentials: ...}`),
unless the server runs with `--metrics-public`, for a scraper that reaches it only over a private network.
The labels name endpoints, workers, devices, outcomes, error types and route templates: never a key, a
payload, a request id or a webhook URL.
"""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from framecast.api.auth import require_api_key
from framecast.api.state import AppState, app_state

router = APIRouter(tags=["operations"])
State = Annotated[AppState, Depends(app_state)]


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, state: State) -> Response:
    """The cluster's queues, jobs and workers (from the database) and this replica's HTTP traffic."""
    if not state.settings.metrics_public:
        await require_api_key(request, request.headers.get("authorization"))
    body, content_type = await anyio.to_thread.run_sync(state.metrics.render, request.headers.get("accept"))
    return Response(body, media_type=content_type)
