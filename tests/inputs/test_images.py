from __future__ import annotations

import os
import struct
import warnings
import zlib
from io import BytesIO

import pytest
from PIL import Image

from framecast.inputs.errors import InputError
from framecast.inputs.images import ImageInfo, load_image, probe_image

from . import make_image

CAP = 4096 * 4096


def noisy(fmt: str, size: tuple[int, int] = (64, 48)) -> bytes:
    """Incompressible pixels, so that cutting the file really loses image data."""
    im = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
    buf = BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` 1-bit pixels (the classic decompression bomb shape);
    its image data is empty, so only a decoder that checks the header first survives it."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def expect(error_type: str, data: bytes, max_image_pixels: int = CAP) -> InputError:
    with pytest.raises(InputError) as info:
        probe_image(data, max_image_pixels=max_image_pixels)
    assert info.value.error_type == error_type, info.value.message
    with pytest.raises(InputError) as info2:
        load_image(data, max_image_pixels=max_image_pixels)
    assert info2.value.error_type == error_type, info2.value.message
    return info.value


@pytest.mark.parametrize(
    ("fmt", "content_type"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
def test_probe_accepts_png_jpeg_webp(fmt: str, content_type: str) -> None:
    info = probe_image(make_image(fmt, (8, 6)), max_image_pixels=CAP)
    assert info == ImageInfo(width=8, height=6, format=fmt, content_type=content_type)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "1", "LA"])
def test_load_image_returns_rgb(mode: str) -> None:
    buf = BytesIO()
    Image.new(mode, (5, 3)).save(buf, "PNG")
    im = load_image(buf.getvalue(), max_image_pixels=CAP)
    assert (im.mode, im.size) == ("RGB", (5, 3))


def test_sniffs_the_real_format() -> None:
    assert probe_image(make_image("JPEG"), max_image_pixels=CAP).content_type == "image/jpeg"


def test_header_only_bomb_is_refused_without_decoding() -> None:
    bomb = png_declaring(20000, 20000)
    assert len(bomb) < 100
    err = expect("image_too_large", bomb)
    assert "4096" not in err.message or "pixels" in err.message


def test_real_compressed_bomb_is_refused() -> None:
    # 5000 x 5000 blank 1-bit pixels compress to a few KB but exceed the cap by 50 %.
    buf = BytesIO()
    Image.new("1", (5000, 5000)).save(buf, "PNG", optimize=True)
    assert len(buf.getvalue()) < 50_000
    expect("image_too_large", buf.getvalue())


@pytest.mark.parametrize("action", ["error", "ignore", "default"])
def test_pillow_bomb_warning_range_is_refused_whatever_the_warning_filters(action: str) -> None:
    # 9500 x 9500 is over Pillow's own warning threshold (~89.5 MP) but under its error threshold, so Pillow warns
    # during open; whether that warning is an exception (pytest's "error") or not, the image is refused.
    bomb = png_declaring(9500, 9500)
    with warnings.catch_warnings():
        warnings.simplefilter(action, Image.DecompressionBombWarning)  # type: ignore[arg-type]
        if action == "default":
            with pytest.warns(Image.DecompressionBombWarning):
                expect("image_too_large", bomb)
        else:
            expect("image_too_large", bomb)


@pytest.mark.parametrize(("size", "ok"), [((100, 100), True), ((100, 101), False), ((101, 100), False)])
def test_pixel_cap_boundary(size: tuple[int, int], ok: bool) -> None:
    data = make_image("PNG", size)
    if ok:
        assert probe_image(data, max_image_pixels=100 * 100).width == size[0]
        assert load_image(data, max_image_pixels=100 * 100).size == size
    else:
        err = expect("image_too_large", data, max_image_pixels=100 * 100)
        assert "10000" in err.message


def test_declared_size_is_checked_before_the_pixel_data() -> None:
    # Empty image data would fail to decode; the size check must come first and win.
    expect("image_too_large", png_declaring(200, 200), max_image_pixels=100 * 100)
    expect("image_load_error", png_declaring(50, 50), max_image_pixels=100 * 100)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_file_is_refused(fmt: str) -> None:
    data = noisy(fmt)
    expect("image_load_error", data[: len(data) // 2])


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "ICO"])
def test_other_formats_are_refused(fmt: str) -> None:
    err = expect("image_load_error", make_image(fmt))
    assert "PNG, JPEG or WEBP" in err.message


@pytest.mark.parametrize(
    "data", [b"", b"not an image", b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"\x89PNG\r\n\x1a\n"]
)
def test_garbage_is_refused(data: bytes) -> None:
    expect("image_load_error", data)


def jpeg_with_orientation(orientation: int) -> bytes:
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    im.paste((0, 0, 255), (20, 0, 40, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = BytesIO()
    im.save(buf, "JPEG", exif=exif, quality=95)
    return buf.getvalue()


def test_load_image_applies_exif_rotation() -> None:
    # Orientation 6: displayed rotated 90 degrees clockwise, so the left (red) half ends up on top.
    im = load_image(jpeg_with_orientation(6), max_image_pixels=CAP)
    assert im.size == (20, 40)
    red, blue = im.getpixel((10, 5)), im.getpixel((10, 35))
    assert isinstance(red, tuple) and isinstance(blue, tuple)
    assert red[0] > 200 and red[2] < 50
    assert blue[2] > 200 and blue[0] < 50


@pytest.mark.parametrize(("orientation", "size"), [(1, (40, 20)), (3, (40, 20)), (6, (20, 40)), (8, (20, 40))])
def test_probe_reports_displayed_size(orientation: int, size: tuple[int, int]) -> None:
    data = jpeg_with_orientation(orientation)
    info = probe_image(data, max_image_pixels=CAP)
    assert (info.width, info.height) == size
    assert load_image(data, max_image_pixels=CAP).size == size
