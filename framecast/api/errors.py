"""Service exceptions to fal's JSON error shapes (protocol.md §1.5)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from framecast.service.auth import AuthenticationError
from framecast.service.queue import (
    EndpointUnavailableError,
    InvalidInputError,
    RequestNotFinishedError,
    RequestNotFoundError,
    UnknownEndpointError,
)
from framecast.service.uploads import UploadRefusedError, UploadTooLargeError

# WaveSpeed's API answers errors in its own envelope.
WAVESPEED_PREFIX = "/api/v3/"


class BadHeaderError(Exception):
    """A request header with a value we cannot honour."""


class FalError(BaseModel):
    """fal's error body (protocol.md §1.5)."""

    detail: str | list[dict[str, Any]] = Field(description="What was wrong; a list of fal's entries for bad input.")
    error_type: str | None = Field(None, description="fal's error type, also sent as `X-Fal-Error-Type`.")


FAL_ERROR_DESCRIPTIONS = {
    400: "A header, query flag or request we cannot honour; `detail` says which.",
    401: "Missing, invalid or revoked API key.",
    403: "The upload URL is not valid (forged or expired).",
    404: "Unknown endpoint, request or file.",
    413: "The body is over this server's limit.",
    503: "No worker can run this endpoint now; `detail` says why and how to fix it.",
}


def fal_errors(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for errors answered in fal's shape."""
    return {code: {"model": FalError, "description": FAL_ERROR_DESCRIPTIONS[code]} for code in status_codes}


def error_response(status_code: int, detail: Any, *, error_type: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail}
    headers = {}
    if error_type is not None:
        body["error_type"] = error_type
        headers["X-Fal-Error-Type"] = error_type
    return JSONResponse(body, status_code=status_code, headers=headers)


def wavespeed_error(status_code: int, message: str) -> JSONResponse:
    return JSONResponse({"code": status_code, "message": message, "data": None}, status_code=status_code)


class BodyLimitErrors:
    """Answers Starlette's body-limit 413 in fal's JSON shape (WaveSpeed's envelope under `/api/v3/`).

    Starlette's limiter answers in plain text, and once a declared Content-Length is over the limit it replaces
    whatever response the app sends, so no exception handler can shape it: this rewrites the response instead.
    It must wrap the whole middleware stack, outside the app-wide limiter.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rewriting = False

        async def send_json(message: Message) -> None:
            nonlocal rewriting
            if message["type"] == "http.response.start" and message["status"] == 413:
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                rewriting = content_type.startswith(b"text/plain")
            if not rewriting:
                await send(message)
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                await body_too_large(scope)(scope, receive, send)

        await self.app(scope, receive, send_json)


def body_too_large(scope: Scope) -> JSONResponse:
    limit = scope.get(MAX_BODY_SIZE_SCOPE_KEY)
    message = "The request body is too large" + (f"; the limit is {limit} bytes" if isinstance(limit, int) else "")
    if str(scope.get("path", "")).startswith(WAVESPEED_PREFIX):
        return wavespeed_error(413, message)
    return error_response(413, message)


def install_error_handlers(app: FastAPI) -> None:
    build_middleware_stack = app.build_middleware_stack
    app.build_middleware_stack = lambda: BodyLimitErrors(build_middleware_stack())  # type: ignore[method-assign]

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, error: HTTPException) -> Response:
        # The router's own answers (404 for a path no route matches, 405): WaveSpeed's envelope under its prefix.
        if request.url.path.startswith(WAVESPEED_PREFIX):
            response = wavespeed_error(error.status_code, str(error.detail))
            response.headers.update(error.headers or {})
            return response
        return await http_exception_handler(request, error)

    @app.exception_handler(413)
    async def _body_too_large(request: Request, _error: Exception) -> JSONResponse:
        # Starlette's body limit, hit while the body streams in (no Content-Length); BodyLimitErrors has the rest.
        return body_too_large(request.scope)

    @app.exception_handler(AuthenticationError)
    async def _unauthenticated(request: Request, error: AuthenticationError) -> JSONResponse:
        if request.url.path.startswith(WAVESPEED_PREFIX):
            response = wavespeed_error(401, str(error))
        else:
            response = error_response(401, str(error))
        response.headers["WWW-Authenticate"] = 'Key realm="framecast"'
        return response

    @app.exception_handler(UploadTooLargeError)
    async def _too_large(request: Request, error: UploadTooLargeError) -> JSONResponse:
        if request.url.path.startswith(WAVESPEED_PREFIX):
            return wavespeed_error(413, str(error))
        return error_response(413, str(error), error_type="file_too_large")

    @app.exception_handler(UploadRefusedError)
    async def _refused(request: Request, error: UploadRefusedError) -> JSONResponse:
        if request.url.path.startswith(WAVESPEED_PREFIX):
            return wavespeed_error(403, str(error))
        return error_response(403, str(error))

    @app.exception_handler(UnknownEndpointError)
    async def _unknown_endpoint(_request: Request, error: UnknownEndpointError) -> JSONResponse:
        return error_response(404, str(error))

    @app.exception_handler(EndpointUnavailableError)
    async def _unavailable(_request: Request, error: EndpointUnavailableError) -> JSONResponse:
        return error_response(503, str(error), error_type="runner_scheduling_failure")

    @app.exception_handler(InvalidInputError)
    async def _invalid(_request: Request, error: InvalidInputError) -> JSONResponse:
        return error_response(422, error.errors)

    @app.exception_handler(RequestNotFoundError)
    async def _not_found(_request: Request, _error: RequestNotFoundError) -> JSONResponse:
        return error_response(404, "Request not found")

    @app.exception_handler(RequestNotFinishedError)
    async def _not_finished(_request: Request, _error: RequestNotFinishedError) -> JSONResponse:
        return error_response(400, "Request is still in progress")

    @app.exception_handler(BadHeaderError)
    async def _bad_header(_request: Request, error: BadHeaderError) -> JSONResponse:
        return error_response(400, str(error), error_type="bad_request")
