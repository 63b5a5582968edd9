"""A strict parser for base64 ``data:`` URIs (RFC 2397) with a size cap checked before decoding."""

from __future__ import annotations

import base64
import binascii
import re

from framecast.inputs.errors import FILE_DOWNLOAD_ERROR, FILE_TOO_LARGE, UNSUPPORTED_CONTENT_TYPE, InputError

# The header (everything before the comma) is tiny in practice; bounding where we look for the comma keeps a
# malformed multi-megabyte string from being scanned.
_MAX_HEADER_CHARS = 1024

_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
_PARAMETER = re.compile(r"[A-Za-z0-9!#$&^_.+-]+=[^;,]*")

# Common non-standard spelling produced by some clients; it means exactly image/jpeg.
_ALIASES = {"image/jpg": "image/jpeg"}


def parse_data_uri(uri: str, *, max_bytes: int, allowed_content_types: frozenset[str]) -> tuple[str, bytes]:
    """Parse ``data:<type>[;name=value...];base64,<payload>`` and return ``(content_type, decoded_bytes)``.

    Rules:

    - Only base64 data URIs are accepted; percent-encoded (non-base64) ones are refused.
    - ``<type>`` is lower-cased (``image/jpg`` is read as ``image/jpeg``) and must be in ``allowed_content_types``;
      an omitted type means ``text/plain`` (RFC 2397) and is therefore refused unless allowed.
    - The payload uses the standard base64 alphabet (``+/``) with no whitespace. Missing ``=`` padding is
      tolerated because it is unambiguous (some encoders strip it); a length that no base64 string can have
      (``len % 4 == 1``) is refused.
    - ``max_bytes`` is the limit on the *decoded* size in bytes. The decoded size is computed from the payload
      length (``len * 3 // 4`` minus padding) and checked *before* decoding, so an oversize payload costs O(1).

    Raises:
        InputError: ``file_download_error`` for a malformed URI or payload (including an empty payload),
            ``unsupported_content_type`` for a type outside the allow-list, ``file_too_large`` when the decoded
            payload would exceed ``max_bytes``. The error carries no field; callers bind one.
    """
    if uri[:5].lower() != "data:":
        raise InputError("not a data URI", error_type=FILE_DOWNLOAD_ERROR)
    comma = uri.find(",", 5, 5 + _MAX_HEADER_CHARS)
    if comma < 0:
        raise InputError("malformed data URI: missing ',' after the media type", error_type=FILE_DOWNLOAD_ERROR)

    parts = uri[5:comma].split(";")
    if len(parts) < 2 or parts[-1].lower() != "base64":
        raise InputError("data URI must be base64-encoded (';base64,')", error_type=FILE_DOWNLOAD_ERROR)
    media_type = parts[0].lower() or "text/plain"
    media_type = _ALIASES.get(media_type, media_type)
    if not _MEDIA_TYPE.fullmatch(media_type):
        raise InputError("malformed data URI: invalid media type", error_type=FILE_DOWNLOAD_ERROR)
    if any(not _PARAMETER.fullmatch(p) for p in parts[1:-1]):
        raise InputError("malformed data URI: invalid parameter", error_type=FILE_DOWNLOAD_ERROR)
    if media_type not in allowed_content_types:
        allowed = ", ".join(sorted(allowed_content_types))
        raise InputError(
            f"data URI content type {media_type!r} is not allowed (allowed: {allowed})",
            error_type=UNSUPPORTED_CONTENT_TYPE,
        )

    # Size checks use lengths and the last two characters only, without copying the payload out of the URI,
    # so an oversize payload is refused in O(1) whatever its length.
    payload_len = len(uri) - comma - 1
    if payload_len == 0:
        raise InputError("data URI has an empty payload", error_type=FILE_DOWNLOAD_ERROR)
    padding = 2 if uri.endswith("==") else 1 if uri.endswith("=") else 0
    unpadded_len = payload_len - padding
    if padding and payload_len % 4:
        raise InputError("malformed data URI: invalid base64 padding", error_type=FILE_DOWNLOAD_ERROR)
    if unpadded_len % 4 == 1:
        raise InputError("malformed data URI: invalid base64 length", error_type=FILE_DOWNLOAD_ERROR)
    decoded_size = unpadded_len * 3 // 4
    if decoded_size > max_bytes:
        raise InputError(
            f"data URI payload is {decoded_size} bytes, over the limit of {max_bytes} bytes",
            error_type=FILE_TOO_LARGE,
        )

    payload = uri[comma + 1 :] + "=" * (-payload_len % 4)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InputError("malformed data URI: invalid base64 payload", error_type=FILE_DOWNLOAD_ERROR) from None
    if not data:
        raise InputError("data URI has an empty payload", error_type=FILE_DOWNLOAD_ERROR)
    return media_type, data
