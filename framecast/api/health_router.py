"""Liveness and what the workers are doing."""

from __future__ import annotations

import time
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends

from framecast.api.state import AppState, app_state
from framecast.service.catalogue import worker_timeout_s

router = APIRouter(tags=["health"])
State = Annotated[AppState, Depends(app_state)]


@router.get("/health")
async def health(state: State) -> dict[str, Any]:
    alive_after = time.time() - worker_timeout_s(state.settings.lease_s)
    workers = await anyio.to_thread.run_sync(lambda: state.store.list_workers(alive_after=alive_after))
    return {
        "status": "ok",
        "workers": [
            {
                "worker_id": worker.worker_id,
                "state": worker.state,
                "endpoints": list(worker.endpoint_ids),
                "error": worker.error,
                "bindings": {
                    endpoint_id: {"engine": entry.engine, "state": entry.state, "error": entry.error}
                    for endpoint_id, entry in worker.endpoints.items()
                },
            }
            for worker in workers
        ],
    }
