"""Service exceptions to fal's JSON error shapes (protocol.md §1.5)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

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


def error_response(status_code: int, detail: Any, *, error_type: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail}
    headers = {}
    if error_type is not None:
        body["error_type"] = error_type
        headers["X-Fal-Error-Type"] = error_type
    return JSONResponse(body, status_code=status_code, headers=headers)


def wavespeed_error(status_code: int, message: str) -> JSONResponse:
    return JSONResponse({"code": status_code, "message": message, "data": None}, status_code=status_code)


def install_error_handlers(app: FastAPI) -> None:
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
