"""Output and input files at `/files/<key>`, with HTTP Range so a browser `<video>` can seek."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from framecast.api.errors import fal_errors
from framecast.api.state import AppState, app_state
from framecast.store.blobs import InvalidKeyError

router = APIRouter(tags=["files"])
State = Annotated[AppState, Depends(app_state)]


FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The file's bytes (HTTP Range is honoured).",
        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
    },
    307: {"description": "The file is in object storage: a short-lived URL to it."},
    **fal_errors(404),
}


@router.get("/files/{key:path}", response_class=Response, responses=FILE_RESPONSES)
@router.head("/files/{key:path}", include_in_schema=False)
async def get_file(state: State, key: str) -> Response:
    try:
        path = state.blobs.local_path(key)
    except InvalidKeyError:
        return JSONResponse({"detail": "File not found"}, status_code=404)
    if path is None:
        return RedirectResponse(state.blobs.url_for(key, base_url=state.settings.public_url or ""))
    if not path.is_file():
        return JSONResponse({"detail": "File not found"}, status_code=404)
    # Keys are unguessable and never reused, so the bytes behind a URL never change. Uploads are user content:
    # the browser must not sniff them into HTML, nor run anything they contain on our origin.
    return FileResponse(path, headers=FILE_HEADERS)


FILE_HEADERS = {
    "Cache-Control": "private, max-age=31536000, immutable",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox",
}
