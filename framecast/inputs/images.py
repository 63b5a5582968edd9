"""Bounded, format-restricted image decoding with Pillow.

Decompression bombs: we deliberately do **not** touch ``Image.MAX_IMAGE_PIXELS`` and do **not** use
``warnings.catch_warnings()``: both mutate process-global state (on Python 3.11 ``catch_warnings`` swaps the global
filter list), which races when several worker threads decode at once. Instead our own pixel check runs on the
header-declared size right after ``Image.open`` and before ``load()``, which is the limit that matters. Pillow's
own guard still fires first for images over its global limit: ``DecompressionBombError`` (over
2 x ``MAX_IMAGE_PIXELS``) is caught, and so is ``DecompressionBombWarning`` where warning filters turn it into an
exception. Where they don't, Pillow prints that warning (once per process under default filters) and our check
refuses the image anyway. The effective cap is therefore ``min(max_image_pixels, 2 * Image.MAX_IMAGE_PIXELS)``
(``Image.MAX_IMAGE_PIXELS`` itself where that warning is an error); product limits sit far below both.

Truncated files are caught by ``load()`` only while Pillow's global ``ImageFile.LOAD_TRUNCATED_IMAGES`` stays at
its default ``False``; nothing in framecast may set it.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO

from PIL import Image, ImageOps, UnidentifiedImageError

from framecast.inputs.errors import IMAGE_LOAD_ERROR, IMAGE_TOO_LARGE, InputError

ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP")
_CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
# EXIF orientations 5-8 rotate by 90 or 270 degrees, so the displayed image has width and height swapped.
_EXIF_ORIENTATION_TAG = 0x0112
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
# What Pillow raises for corrupt or truncated data varies by plugin and decoder.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, struct.error, zlib.error)


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`probe_image` learned. ``width``/``height`` are in pixels *as displayed*, i.e. after the EXIF
    orientation is applied (the same size :func:`load_image` returns); ``content_type`` is sniffed from the bytes."""

    width: int
    height: int
    format: str
    content_type: str


def probe_image(data: bytes, *, max_image_pixels: int) -> ImageInfo:
    """Fully decode ``data`` to validate it, then drop the pixels and return its :class:`ImageInfo`.

    Only PNG, JPEG and WEBP are accepted. ``max_image_pixels`` caps ``width * height`` (pixels) and is checked
    against the header before any pixel data is decoded. CPU-bound: call it from a worker thread.

    Raises:
        InputError: ``image_too_large`` when the image has more than ``max_image_pixels`` pixels (decompression
            bombs included); ``image_load_error`` when the bytes are not a decodable PNG/JPEG/WEBP image or are
            truncated/corrupt.
    """
    with _open_checked(data, max_image_pixels=max_image_pixels) as im:
        fmt = str(im.format)
        width, height = im.size
        try:
            orientation = im.getexif().get(_EXIF_ORIENTATION_TAG)
        except _DECODE_ERRORS:
            # A broken EXIF block does not make the pixels unusable; treat it as "no rotation".
            orientation = None
    if orientation in _SWAPPING_ORIENTATIONS:
        width, height = height, width
    return ImageInfo(width=width, height=height, format=fmt, content_type=_CONTENT_TYPES[fmt])


def load_image(data: bytes, *, max_image_pixels: int) -> Image.Image:
    """Decode ``data`` with the same checks as :func:`probe_image`, apply the EXIF orientation and return an
    ``RGB`` image (alpha is dropped, palettes and greyscale are expanded). CPU-bound: call it from a worker thread.

    Raises:
        InputError: ``image_too_large`` or ``image_load_error``, as for :func:`probe_image`.
    """
    with _open_checked(data, max_image_pixels=max_image_pixels) as im:
        try:
            transposed = ImageOps.exif_transpose(im)
            return transposed.convert("RGB")
        except _DECODE_ERRORS:
            raise InputError("the image could not be decoded", error_type=IMAGE_LOAD_ERROR) from None


@contextmanager
def _open_checked(data: bytes, *, max_image_pixels: int) -> Iterator[Image.Image]:
    """Open ``data`` as PNG/JPEG/WEBP, enforce the pixel cap on the declared size, then ``load()`` everything."""
    try:
        im = Image.open(BytesIO(data), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_large(max_image_pixels) from None
    except UnidentifiedImageError:
        raise InputError("the file is not a PNG, JPEG or WEBP image", error_type=IMAGE_LOAD_ERROR) from None
    except _DECODE_ERRORS:
        raise InputError("the image could not be decoded", error_type=IMAGE_LOAD_ERROR) from None
    with im:
        width, height = im.size
        if width <= 0 or height <= 0:
            raise InputError("the image has no pixels", error_type=IMAGE_LOAD_ERROR)
        if width * height > max_image_pixels:
            raise _too_large(max_image_pixels, width, height)
        try:
            im.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _too_large(max_image_pixels, width, height) from None
        except _DECODE_ERRORS:
            raise InputError("the image is truncated or corrupt", error_type=IMAGE_LOAD_ERROR) from None
        yield im


def _too_large(max_image_pixels: int, width: int | None = None, height: int | None = None) -> InputError:
    size = f" ({width}x{height} = {width * height} pixels)" if width is not None and height is not None else ""
    return InputError(
        f"the image is too large{size}; the limit is {max_image_pixels} pixels", error_type=IMAGE_TOO_LARGE
    )
