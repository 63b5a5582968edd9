"""The API-key check that guards the API routers (a FastAPI dependency)."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from framecast.api.state import app_state

SECURITY_SCHEME = "apiKeyAuth"
# Declares the key in the OpenAPI document; the check itself is ours (a missing key is our 401, not FastAPI's).
API_KEY_HEADER = APIKeyHeader(
    name="Authorization",
    scheme_name=SECURITY_SCHEME,
    description="`Key <key>` (fal's clients) or `Bearer <key>` (WaveSpeed's).",
    auto_error=False,
)
SECURITY: list[dict[str, list[str]]] = [{SECURITY_SCHEME: []}]


async def require_api_key(request: Request, _header: Annotated[str | None, Security(API_KEY_HEADER)]) -> None:
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
