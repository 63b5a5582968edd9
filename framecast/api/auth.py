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
    if not state.settings.auth:
        return
    header = request.headers.get("authorization")
    await anyio.to_thread.run_sync(state.authenticator.authenticate, header)
