"""The one exception type for refused user input, shaped after fal's 422 validation entries."""

from __future__ import annotations

from typing import Any

# fal's error types (docs.fal.ai/errors) that this package uses:
#   file_download_error      - the input could not be obtained: bad/unsupported URL, refused address, network
#                              failure, HTTP error status, timeout, malformed data URI.
#   file_too_large           - the payload (data URI or download) exceeds the byte limit.
#   unsupported_content_type - the declared content type is not on the allow-list.
#   image_load_error         - the bytes are not a decodable PNG/JPEG/WEBP image (also: truncated files).
#   image_too_large          - the image's pixel count exceeds the limit (decompression bombs included).
FILE_DOWNLOAD_ERROR = "file_download_error"
FILE_TOO_LARGE = "file_too_large"
UNSUPPORTED_CONTENT_TYPE = "unsupported_content_type"
IMAGE_LOAD_ERROR = "image_load_error"
IMAGE_TOO_LARGE = "image_too_large"


class InputError(Exception):
    """A user input we refuse.

    Becomes one entry of fal's 422 body: ``{"loc": ["body", field], "msg": message, "type": error_type,
    "input": input}``. ``message`` is shown to the user, so it must only describe what the user gave us and
    never internal details (resolved addresses, exception text from libraries).
    """

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        error_type: str = "value_error",
        input: object = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.error_type = error_type
        self.input = input

    def with_field(self, field: str) -> InputError:
        """Return a copy of this error bound to ``field`` (the original is left untouched)."""
        return InputError(self.message, field=field, error_type=self.error_type, input=self.input)

    def to_detail(self) -> dict[str, Any]:
        """The fal 422 ``detail`` entry for this error (``loc`` is ``["body"]`` when no field is bound)."""
        loc: list[str] = ["body"] if self.field is None else ["body", self.field]
        return {"loc": loc, "msg": self.message, "type": self.error_type, "input": self.input}

    def __repr__(self) -> str:
        return f"InputError({self.message!r}, field={self.field!r}, error_type={self.error_type!r})"
