"""fal's proxy protocol (protocol.md §8.2 mode B): one URL, the real target in `x-fal-target-url`.

`@fal-ai/client` configured with `proxyUrl: {url: "<server>/api/fal/proxy", when: "always"}` sends every
request, whatever its method, to that one URL, with the fal URL it meant in the `x-fal-target-url` header.
This middleware serves such a request in-process, as if the client had called our own route:

    https://queue.fal.run/<path>?<query>  ->  /queue/<path>?<query>
    https://fal.run/<path>?<query>        ->  /run/<path>?<query>
    https://rest.fal.ai/<path>?<query>    ->  /<path>?<query>   (storage: /storage/upload/initiate?...)

Headers (Authorization included) and the body pass through unchanged; the response is the route's own.
A request without the header, or with a target that is not https on one of those three hosts, gets
400 `{"detail": ...}`: nothing is ever forwarded to another server, so this is not an open proxy.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

PROXY_PATH = "/api/fal/proxy"
TARGET_URL_HEADER = "x-fal-target-url"
# fal's host -> the prefix of our routes that serve it.
HOST_PREFIXES = {"queue.fal.run": "/queue", "fal.run": "/run", "rest.fal.ai": ""}


class FalProxyMiddleware:
    def __init__(self, app: ASGIApp, *, path: str = PROXY_PATH) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        target = Headers(scope=scope).get(TARGET_URL_HEADER)
        if target is None:
            await JSONResponse({"detail": f"Missing the {TARGET_URL_HEADER} header"}, status_code=400)(
                scope, receive, send
            )
            return
        path_and_query = route_target(target)
        if path_and_query is None:
            hosts = ", ".join(f"https://{host}/" for host in HOST_PREFIXES)
            detail = f"{TARGET_URL_HEADER} must be an https URL on one of: {hosts}"
            await JSONResponse({"detail": detail}, status_code=400)(scope, receive, send)
            return
        raw_path, query = path_and_query
        rewritten = {
            **scope,
            "path": unquote(raw_path),
            "raw_path": raw_path.encode("ascii"),
            "query_string": query.encode("ascii"),
        }
        await self.app(rewritten, receive, send)


def route_target(target: str) -> tuple[str, str] | None:
    """(raw path, query string) of our route serving `target`, or None when we do not serve it."""
    if not target.isascii():
        return None
    try:
        parts = urlsplit(target)
    except ValueError:
        return None
    # netloc, not hostname: a port or user info means some other server.
    prefix = HOST_PREFIXES.get(parts.netloc.lower()) if parts.scheme.lower() == "https" else None
    if prefix is None:
        return None
    path = parts.path or "/"
    # A URL client would resolve dot segments and leave the prefix; refuse rather than guess.
    if any(segment in (".", "..") for segment in unquote(path).split("/")):
        return None
    return prefix + path, parts.query
