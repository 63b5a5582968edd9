"""fal's synchronous run under `/run` (protocol.md §2): the connection stays open until the result."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from framecast.api.auth import require_api_key
from framecast.api.headers import read_json_body, submit_options
from framecast.api.state import AppState, app_state, base_url

router = APIRouter(prefix="/run", tags=["run"], dependencies=[Depends(require_api_key)])
State = Annotated[AppState, Depends(app_state)]


# Documented per endpoint in the OpenAPI document (framecast.api.openapi), with its input schema.
@router.post("/{endpoint_id:path}", include_in_schema=False)
async def run(request: Request, state: State, endpoint_id: str) -> JSONResponse:
    """Run and wait. A client that hangs up cancels its job."""
    state.queue.endpoint(endpoint_id)
    raw_input = await read_json_body(request)
    options = submit_options(request, base_url=base_url(request), allow_test_faults=state.settings.test_faults)
    record = await state.queue.submit(endpoint_id, raw_input, options)
    request_id = record.request_id
    waiter = asyncio.ensure_future(
        state.queue.wait_until_finished(request_id, poll_interval_s=state.settings.poll_interval_s)
    )
    try:
        while not waiter.done():
            if await request.is_disconnected():
                await state.queue.cancel(request_id)
                waiter.cancel()
                return JSONResponse({"detail": "Client disconnected"}, status_code=499)
            await asyncio.wait({waiter}, timeout=1.0)
    finally:
        if not waiter.done():
            waiter.cancel()
    result = await state.queue.result(request_id, base_url=base_url(request))
    return JSONResponse(
        result.body, status_code=result.status_code, headers={**result.headers, "x-fal-request-id": request_id}
    )
