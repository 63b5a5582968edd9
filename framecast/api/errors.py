"""Service exceptions to fal's JSON error shapes (protocol.md §1.5)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from framecast.service.queue import (
    EndpointUnavailableError,
    InvalidInputError,
    RequestNotFinishedError,
    RequestNotFoundError,
    UnknownEndpointError,
)


class BadHeaderError(Exception):
    """A request header with a value we cannot honour."""


def error_response(status_code: int, detail: Any, *, error_type: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail}
    headers = {}
    if error_type is not None:
        body["error_type"] = error_type
        headers["X-Fal-Error-Type"] = error_type
    return JSONResponse(body, status_code=status_code, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
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
