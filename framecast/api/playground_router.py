"""The playground: static pages that drive the public API from the browser (framecast/playground/).

No key is needed to load them: they hold nothing but HTML, CSS and JS. The page asks for the user's API key,
keeps it in the browser, and sends it with every API call, exactly as any other client does.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, Response

from framecast.api.state import AppState, app_state

router = APIRouter(tags=["playground"], include_in_schema=False)
State = Annotated[AppState, Depends(app_state)]

PLAYGROUND = resources.files("framecast.playground")
ASSET_NAME = re.compile(r"^[a-z][a-z0-9-]*\.(js|css)$")
MEDIA_TYPES = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}
# Scripts only from our own files: an input, a log line or a result can never run as code on this origin, even
# if it ends up in the page. Images, previews and results may come from anywhere a URL input or the storage points.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: https: http:; "
        "media-src 'self' blob: https: http:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        "form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # The pages are small and change with the server; revalidating keeps a browser from running an old script.
    "Cache-Control": "no-cache",
}


def _read(name: str) -> str:
    return PLAYGROUND.joinpath(name).read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse)
async def home() -> HTMLResponse:
    """Every endpoint and whether it takes jobs now, and the key's recent requests."""
    return HTMLResponse(_read("index.html"), headers=PAGE_HEADERS)


# Registered before the endpoint pages, whose path parameter would otherwise swallow it.
@router.get("/playground/assets/{name}")
async def asset(name: str) -> Response:
    match = ASSET_NAME.match(name)
    resource = PLAYGROUND.joinpath(name)
    if match is None or not resource.is_file():
        return Response("Not found", status_code=404, media_type="text/plain")
    return Response(resource.read_bytes(), media_type=MEDIA_TYPES[match.group(1)], headers=PAGE_HEADERS)


@router.get("/playground/{endpoint_id:path}", response_class=HTMLResponse)
async def endpoint_page(state: State, endpoint_id: str) -> HTMLResponse:
    """One endpoint's form, its live requests and its history; the page reads the endpoint id from its URL."""
    if endpoint_id not in state.queue.catalogue:
        page = _read("not-found.html")
        return HTMLResponse(page, status_code=404, headers=PAGE_HEADERS)
    return HTMLResponse(_read("endpoint.html"), headers=PAGE_HEADERS)
