from __future__ import annotations

import base64

import pytest

from framecast.inputs import data_uri
from framecast.inputs.data_uri import parse_data_uri
from framecast.inputs.errors import InputError

from . import make_image

IMAGES = frozenset({"image/png", "image/jpeg", "image/webp"})
MB = 1024 * 1024


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def expect(error_type: str, uri: str, max_bytes: int = MB) -> InputError:
    with pytest.raises(InputError) as info:
        parse_data_uri(uri, max_bytes=max_bytes, allowed_content_types=IMAGES)
    assert info.value.error_type == error_type, info.value.message
    return info.value


@pytest.mark.parametrize(
    ("fmt", "content_type"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
def test_valid_images(fmt: str, content_type: str) -> None:
    data = make_image(fmt)
    assert parse_data_uri(f"data:{content_type};base64,{b64(data)}", max_bytes=MB, allowed_content_types=IMAGES) == (
        content_type,
        data,
    )


@pytest.mark.parametrize(
    ("header", "content_type"),
    [
        ("DATA:IMAGE/PNG;BASE64", "image/png"),
        ("data:image/png;name=cat.png;base64", "image/png"),
        ("data:image/png;charset=binary;name=;base64", "image/png"),
        ("data:image/jpg;base64", "image/jpeg"),  # common alias
    ],
)
def test_header_variants(header: str, content_type: str) -> None:
    assert parse_data_uri(f"{header},{b64(b'abc')}", max_bytes=MB, allowed_content_types=IMAGES) == (
        content_type,
        b"abc",
    )


@pytest.mark.parametrize(("data", "payload"), [(b"a", "YQ"), (b"ab", "YWI"), (b"abc", "YWJj")])
def test_missing_padding_is_tolerated(data: bytes, payload: str) -> None:
    assert parse_data_uri(f"data:image/png;base64,{payload}", max_bytes=MB, allowed_content_types=IMAGES)[1] == data


@pytest.mark.parametrize(
    "uri",
    [
        "data:image/png,%89PNG",  # percent-encoded, not base64
        "data:image/png;charset=utf-8,abc",
        "data:image/png;base64",  # no comma
        "data:image/png;base64;x=y,YWJj",  # base64 must be last
        "data:image/png;bad param;base64,YWJj",
        "data:image;base64,YWJj",  # not type/subtype
        "data:image/png ;base64,YWJj",
        "data:/png;base64,YWJj",
        "image/png;base64,YWJj",  # no scheme
        "https://example.test/x.png",
        "data:image/png;base64,YWJj" + "," + "YWJj",  # comma inside the payload
        "data:image/png;base64,YW Jj",  # whitespace
        "data:image/png;base64,YWJj\n",
        "data:image/png;base64,YW-_",  # urlsafe alphabet
        "data:image/png;base64,YWJjZ",  # length % 4 == 1
        "data:image/png;base64,YQ=",  # wrong padding length
        "data:image/png;base64,YQ===",
        "data:image/png;base64,Y=Jj",
        "data:image/png;base64,====",
        "data:image/png;base64,YWJjé",  # non-ASCII
        "data:image/png;base64,",  # empty payload
        "data:" + "x" * 2000 + ";base64,YWJj",  # header far too long
    ],
)
def test_malformed(uri: str) -> None:
    expect("file_download_error", uri)


@pytest.mark.parametrize(
    "header",
    [
        "data:text/html;base64",
        "data:image/svg+xml;base64",
        "data:image/gif;base64",
        "data:application/octet-stream;base64",
        "data:;base64",  # RFC 2397 default: text/plain
    ],
)
def test_disallowed_types(header: str) -> None:
    err = expect("unsupported_content_type", f"{header},{b64(b'<svg/>')}")
    assert "not allowed" in err.message


def test_empty_decoded_payload() -> None:
    expect("file_download_error", "data:image/png;base64,")


@pytest.mark.parametrize("size", [999, 1000, 1001, 1002, 1003])
def test_size_boundary(size: int) -> None:
    uri = f"data:image/png;base64,{b64(b'x' * size)}"
    if size <= 1000:
        assert len(parse_data_uri(uri, max_bytes=1000, allowed_content_types=IMAGES)[1]) == size
    else:
        err = expect("file_too_large", uri, max_bytes=1000)
        assert f"{size} bytes" in err.message


@pytest.mark.parametrize("size", [1001, 1002])
def test_size_boundary_without_padding(size: int) -> None:
    payload = b64(b"x" * size).rstrip("=")
    expect("file_too_large", f"data:image/png;base64,{payload}", max_bytes=1000)


def test_oversize_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    # A 40 MB payload: the refusal must come from the length alone, never from decoding it.
    def no_decoding(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("b64decode must not run for an oversize payload")

    monkeypatch.setattr(data_uri.base64, "b64decode", no_decoding)
    huge = "data:image/png;base64," + "A" * (40 * MB)
    err = expect("file_too_large", huge, max_bytes=20 * MB)
    assert "over the limit of 20971520 bytes" in err.message


def test_errors_carry_no_field() -> None:
    assert expect("file_download_error", "data:image/png;base64,!!!!").field is None
