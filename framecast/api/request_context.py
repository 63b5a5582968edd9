"""What every request carries through the API: the request id its log lines name, and its HTTP metrics.

`RequestContextMiddleware` is pure ASGI on purpose: the routes run in its own asyncio context (no task in
between, as `BaseHTTPMiddleware` would add), so a request id bound by a route (`bind_path_request_id`) or by
a submit (`QueueService.submit`) is still set when uvicorn writes the access line, which it does while the
response starts.
"""

from __future__ import annotations

import time

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from framecast.logs import bind_request_id, request_scope
from framecast.service.metrics import HttpMetrics


class RequestContextMiddleware:
    """A fresh request-id scope for each HTTP request; its method, route template, status and duration counted."""

    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # An app that fails before answering has answered 500 (Starlette's outermost error handler sends it).
        status_code = 500

        async def observed_send(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        started = time.perf_counter()
        with request_scope():
            try:
                await self.app(scope, receive, observed_send)
            finally:
                # The router records the route it matched in this same scope dictionary.
                route = getattr(scope.get("route"), "path", None)
                self.metrics.observe(
                    method=scope["method"],
                    route=route,
                    status_code=status_code,
                    duration_s=time.perf_counter() - started,
                )


async def bind_path_request_id(request: Request) -> None:
    """An app-wide dependency: a route with a `{request_id}` path parameter names it on every log line."""
    request_id = request.path_params.get("request_id")
    if isinstance(request_id, str) and request_id:
        bind_request_id(request_id)
