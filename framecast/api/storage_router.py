"""Uploads, in fal's storage protocol (protocol.md §3) and as one plain endpoint.

- `POST /storage/upload/initiate` ({content_type, file_name}) -> {upload_url, file_url}; then
  `PUT upload_url` with the raw bytes. The upload URL carries a signed token, so the PUT
  needs no key (@fal-ai/client sends none). This is also fal-client's `repository="fal"` path.
- `POST /files/upload` with the raw bytes (Content-Type, optional X-Fal-File-Name) ->
  {access_url}: fal's CDN upload, and the plainest way to upload with curl.
  `POST /storage/auth/token` hands out the short-lived bearer token fal-client sends there.

Every upload is streamed to storage under `max_upload_bytes` and expires after
`upload_ttl_s` (docs/uploads.md).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from framecast.api.auth import SECURITY, require_api_key
from framecast.api.errors import fal_errors
from framecast.api.protocol import iso_timestamp
from framecast.api.state import AppState, app_state, base_url
from framecast.service.auth import AuthenticationError
from framecast.service.tokens import InvalidTokenError

State = Annotated[AppState, Depends(app_state)]
CDN_TOKEN_PURPOSE = "cdn"
CDN_TOKEN_TTL_S = 3600.0
# The upload routes read the raw body themselves, so OpenAPI is told its shape here.
RAW_BODY: dict[str, Any] = {
    "required": True,
    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
}


class InitiateUpload(BaseModel):
    model_config = ConfigDict(extra="allow")

    content_type: str | None = None
    file_name: str | None = None


class UploadTicketResponse(BaseModel):
    upload_url: str
    file_url: str


class AccessUrl(BaseModel):
    access_url: str


class StoredFile(BaseModel):
    file_url: str
    size: int
    expires_at: str


class CdnToken(BaseModel):
    token: str
    token_type: str
    base_url: str
    expires_at: str


def build_storage_router() -> APIRouter:
    router = APIRouter(tags=["uploads"])

    @router.post(
        "/storage/upload/initiate",
        response_model=UploadTicketResponse,
        dependencies=[Depends(require_api_key)],
        # 400: a body that is not even text (FastAPI's answer); 422: JSON that is not the ticket.
        responses=fal_errors(400, 401, 413),
    )
    async def initiate(request: Request, state: State, body: InitiateUpload) -> dict[str, Any]:
        """Step 1 of an upload: where to PUT the bytes, and the URL the file will have (valid as an input)."""
        ticket = state.uploads.create_ticket(
            file_name=body.file_name, content_type=body.content_type, base_url=base_url(request)
        )
        return {"upload_url": ticket.upload_url, "file_url": ticket.file_url}

    @router.put("/storage/upload/{token}", response_model=StoredFile, responses=fal_errors(403, 413))
    async def put_upload(request: Request, state: State, token: str) -> dict[str, Any]:
        """Step 2: the raw bytes. The token in the URL is the authorisation; it expires after an hour."""
        stored = await state.uploads.receive(
            token, request.stream(), content_type=request.headers.get("content-type"), base_url=base_url(request)
        )
        return {"file_url": stored.file_url, "size": stored.size_bytes, "expires_at": iso_timestamp(stored.expires_at)}

    @router.post(
        "/storage/auth/token",
        response_model=CdnToken,
        dependencies=[Depends(require_api_key)],
        responses=fal_errors(401),
    )
    async def cdn_token(request: Request, state: State) -> dict[str, Any]:
        """fal-client's first upload step: a bearer token for `POST /files/upload`."""
        expires_at = time.time() + CDN_TOKEN_TTL_S
        return {
            "token": state.tokens.sign(CDN_TOKEN_PURPOSE, {}, expires_at=expires_at),
            "token_type": "Bearer",
            "base_url": base_url(request),
            "expires_at": iso_timestamp(expires_at),
        }

    @router.post(
        "/files/upload",
        response_model=AccessUrl,
        responses=fal_errors(401, 413),
        openapi_extra={"security": SECURITY, "requestBody": RAW_BODY},
    )
    async def upload(request: Request, state: State) -> JSONResponse:
        """Upload one file as the raw body. Auth: an API key, or a token from `/storage/auth/token`."""
        await _require_key_or_cdn_token(request, state)
        stored = await state.uploads.store(
            request.stream(),
            file_name=request.headers.get("x-fal-file-name"),
            content_type=request.headers.get("content-type"),
            base_url=base_url(request),
        )
        return JSONResponse(
            {"access_url": stored.file_url}, headers={"X-Framecast-Expires-At": iso_timestamp(stored.expires_at)}
        )

    return router


async def _require_key_or_cdn_token(request: Request, state: AppState) -> None:
    header = request.headers.get("authorization") or ""
    scheme, _, credential = header.partition(" ")
    if scheme.lower() == "bearer" and ":" not in credential:
        try:
            state.tokens.verify(credential.strip(), CDN_TOKEN_PURPOSE, now=time.time())
            return
        except InvalidTokenError as error:
            if state.settings.auth:
                raise AuthenticationError(f"Invalid upload token ({error})") from None
    if state.settings.auth:
        await anyio.to_thread.run_sync(state.authenticator.authenticate, header or None)
