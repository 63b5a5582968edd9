"""The API-key check that guards the API routers (a FastAPI dependency)."""

from __future__ import annotations

import anyio.to_thread
from fastapi import Request

from framecast.api.state import app_state


async def require_api_key(request: Request) -> None:
    """Raises `AuthenticationError` (a 401) unless the request carries an active key, or auth is off.

    Runs before the body is read, so an unauthenticated upload costs nothing.
    """
    state = app_state(request)
    request.state.api_key_id = None
    if not state.settings.auth:
        return
    header = request.headers.get("authorization")
    record = await anyio.to_thread.run_sync(state.authenticator.authenticate, header)
    # Jobs remember which key submitted them, for that key's history.
    request.state.api_key_id = record.key_id


def api_key_id(request: Request) -> str | None:
    """The key id `require_api_key` accepted for this request (None when auth is off)."""
    value: str | None = getattr(request.state, "api_key_id", None)
    return value
