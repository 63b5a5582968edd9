"""`GET /.well-known/jwks.json`: the public keys that verify our fal webhooks (no key needed)."""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends

from framecast.api.state import AppState, app_state
from framecast.service.webhooks import jwks

router = APIRouter(tags=["webhooks"])
State = Annotated[AppState, Depends(app_state)]


@router.get("/.well-known/jwks.json")
async def get_jwks(state: State) -> dict[str, Any]:
    """Every Ed25519 key that is not retired, newest first. Receivers try each one."""
    records = await anyio.to_thread.run_sync(state.credentials.list_signing_keys)
    return jwks(records)
