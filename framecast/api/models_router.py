"""The catalogue (`GET /models`) and each endpoint's OpenAPI document, where fal serves it."""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request

from framecast import __version__
from framecast.api.errors import fal_errors
from framecast.api.openapi import endpoint_document
from framecast.api.state import AppState, app_state, base_url

router = APIRouter(tags=["models"])
State = Annotated[AppState, Depends(app_state)]


@router.get("/models")
async def list_models(request: Request, state: State) -> dict[str, Any]:
    """Every endpoint: the engine and weights bound to it, and whether it takes jobs now (and if not, why)."""
    catalogue = await anyio.to_thread.run_sync(state.catalogue.to_json)
    base = base_url(request)
    for entry in catalogue["endpoints"]:
        entry["openapi_url"] = f"{base}/api/openapi/queue/openapi.json?endpoint_id={entry['endpoint_id']}"
    return catalogue


@router.get("/api/openapi/queue/openapi.json", responses=fal_errors(404))
async def endpoint_openapi(
    request: Request,
    state: State,
    endpoint_id: Annotated[str, Query(description="The endpoint, e.g. fal-ai/wan-i2v.")],
) -> dict[str, Any]:
    """fal's per-endpoint queue OpenAPI document. Unknown endpoints get a 404."""
    spec = state.queue.endpoint(endpoint_id)
    return endpoint_document(spec, queue_url=base_url(request) + "/queue", version=__version__)
