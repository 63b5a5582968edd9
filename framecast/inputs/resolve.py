"""Turn a user's image field (``data:`` URI or http(s) URL) into validated image bytes."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import anyio.to_thread

from framecast.inputs.data_uri import parse_data_uri
from framecast.inputs.errors import FILE_DOWNLOAD_ERROR, FILE_TOO_LARGE, InputError
from framecast.inputs.images import probe_image
from framecast.inputs.safe_fetch import FetchPolicy, fetch_url

# The 422 body echoes the input; a multi-megabyte data URI must not be copied into it.
_MAX_ECHO_CHARS = 256


@dataclass(frozen=True)
class ResolvedImage:
    """Validated image bytes. ``content_type`` is sniffed from the bytes (not the declared type); ``width`` and
    ``height`` are pixels as displayed (after the EXIF orientation)."""

    content: bytes
    content_type: str
    width: int
    height: int


async def resolve_image_input(
    field: str, value: str, *, policy: FetchPolicy, max_image_pixels: int, content: bytes | None = None
) -> ResolvedImage:
    """Obtain and validate the image that ``value`` refers to.

    ``data:`` URIs are parsed with ``policy.max_bytes`` and ``policy.allowed_content_types``; ``http``/``https``
    URLs are downloaded with :func:`fetch_url` under ``policy``, unless the caller already has the bytes
    (``content``: a file in our own store that ``value`` names) and only checks them. The bytes are then fully
    decoded by :func:`probe_image` in a worker thread (``max_image_pixels`` caps width x height).

    Raises:
        InputError: bound to ``field`` (``input`` is the value, shortened if long), with the error types of
            :func:`parse_data_uri`, :func:`fetch_url` and :func:`probe_image`; any other scheme is a
            ``file_download_error``.
    """
    try:
        scheme = value.split(":", 1)[0].lower() if ":" in value else ""
        if content is not None:
            if len(content) > policy.max_bytes:
                raise InputError(
                    f"the file is larger than the limit of {policy.max_bytes} bytes", error_type=FILE_TOO_LARGE
                )
        elif scheme == "data":
            _, content = parse_data_uri(
                value, max_bytes=policy.max_bytes, allowed_content_types=policy.allowed_content_types
            )
        elif scheme in ("http", "https"):
            content = (await fetch_url(value, policy=policy)).content
        else:
            raise InputError("must be an http(s) URL or a base64 data: URI", error_type=FILE_DOWNLOAD_ERROR)
        probe = functools.partial(probe_image, content, max_image_pixels=max_image_pixels)
        info = await anyio.to_thread.run_sync(probe)
    except InputError as exc:
        raise InputError(exc.message, field=field, error_type=exc.error_type, input=_echo(value)) from exc
    return ResolvedImage(content=content, content_type=info.content_type, width=info.width, height=info.height)


def _echo(value: str) -> str:
    return value if len(value) <= _MAX_ECHO_CHARS else value[:_MAX_ECHO_CHARS] + "..."
