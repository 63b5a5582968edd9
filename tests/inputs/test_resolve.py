from __future__ import annotations

import base64
import threading
from collections.abc import Iterator

import pytest

from framecast.inputs import resolve
from framecast.inputs.errors import InputError
from framecast.inputs.images import ImageInfo
from framecast.inputs.resolve import ResolvedImage, resolve_image_input
from framecast.inputs.safe_fetch import FetchPolicy

from . import FakeResolver, LoopbackServer, NetworkGuard, make_image, serve

pytestmark = pytest.mark.anyio

CAP = 4096 * 4096
PNG = make_image("PNG", (8, 6))
JPEG = make_image("JPEG", (10, 4))


def data_uri(data: bytes, content_type: str = "image/png") -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver({"images.test": ["127.0.0.1"]})


@pytest.fixture
def policy(resolver: FakeResolver) -> FetchPolicy:
    return FetchPolicy(allow_private=True, resolver=resolver, max_bytes=100_000)


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with serve() as state:
        state.routes["/cat.png"] = lambda h: h.respond(200, PNG, "image/png")
        state.routes["/lies.png"] = lambda h: h.respond(200, JPEG, "image/png")
        state.routes["/text.png"] = lambda h: h.respond(200, b"hello", "image/png")
        yield state


async def expect(
    error_type: str, value: str, policy: FetchPolicy, *, field: str = "image_url", max_image_pixels: int = CAP
) -> InputError:
    with pytest.raises(InputError) as info:
        await resolve_image_input(field, value, policy=policy, max_image_pixels=max_image_pixels)
    err = info.value
    assert err.error_type == error_type, err.message
    assert err.field == field
    assert err.to_detail()["loc"] == ["body", field]
    return err


async def test_data_uri(policy: FetchPolicy) -> None:
    result = await resolve_image_input("image_url", data_uri(PNG), policy=policy, max_image_pixels=CAP)
    assert result == ResolvedImage(content=PNG, content_type="image/png", width=8, height=6)


async def test_data_uri_content_type_is_sniffed(policy: FetchPolicy) -> None:
    result = await resolve_image_input("image_url", data_uri(JPEG), policy=policy, max_image_pixels=CAP)
    assert (result.content_type, result.width, result.height) == ("image/jpeg", 10, 4)


async def test_url(server: LoopbackServer, policy: FetchPolicy) -> None:
    url = f"http://images.test:{server.port}/cat.png"
    result = await resolve_image_input("image_url", url, policy=policy, max_image_pixels=CAP)
    assert result == ResolvedImage(content=PNG, content_type="image/png", width=8, height=6)
    assert server.requests[0].headers["host"] == f"images.test:{server.port}"


async def test_url_content_type_is_sniffed(server: LoopbackServer, policy: FetchPolicy) -> None:
    result = await resolve_image_input("image_url", server.url("/lies.png"), policy=policy, max_image_pixels=CAP)
    assert result.content_type == "image/jpeg"


async def test_url_that_is_not_an_image(server: LoopbackServer, policy: FetchPolicy) -> None:
    err = await expect("image_load_error", server.url("/text.png"), policy)
    assert err.input == server.url("/text.png")


async def test_probe_runs_off_the_event_loop_thread(policy: FetchPolicy, monkeypatch: pytest.MonkeyPatch) -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []
    real = resolve.probe_image

    def recording_probe(data: bytes, *, max_image_pixels: int) -> ImageInfo:
        seen.append(threading.get_ident())
        return real(data, max_image_pixels=max_image_pixels)

    monkeypatch.setattr(resolve, "probe_image", recording_probe)
    await resolve_image_input("image_url", data_uri(PNG), policy=policy, max_image_pixels=CAP)
    assert len(seen) == 1 and seen[0] != loop_thread


@pytest.mark.parametrize(
    "value",
    [
        "file:///etc/passwd",
        "ftp://images.test/cat.png",
        "javascript:alert(1)",
        "blob:https://example.test/uuid",
        "/etc/passwd",
        "cat.png",
        "",
        " data:image/png;base64,AAAA",
    ],
)
async def test_other_schemes_are_refused(value: str, policy: FetchPolicy, resolver: FakeResolver) -> None:
    err = await expect("file_download_error", value, policy, field="start_image")
    assert err.input == value
    assert resolver.calls == []


async def test_refused_url_is_bound_to_the_field(guard: NetworkGuard) -> None:
    url = "http://169.254.169.254/latest/meta-data"
    err = await expect("file_download_error", url, FetchPolicy(resolver=FakeResolver()), field="end_image_url")
    assert err.to_detail() == {
        "loc": ["body", "end_image_url"],
        "msg": err.message,
        "type": "file_download_error",
        "input": url,
    }
    assert guard.connections == []


async def test_oversize_data_uri_is_bound_and_not_echoed_in_full(policy: FetchPolicy) -> None:
    value = data_uri(b"\0" * 200_000)
    err = await expect("file_too_large", value, policy)
    assert isinstance(err.input, str) and len(err.input) < 300 and value.startswith(err.input.removesuffix("..."))


async def test_disallowed_data_uri_type(policy: FetchPolicy) -> None:
    await expect("unsupported_content_type", data_uri(b"<svg/>", "image/svg+xml"), policy)


async def test_data_uri_with_garbage_bytes(policy: FetchPolicy) -> None:
    await expect("image_load_error", data_uri(b"definitely not a png"), policy)


async def test_pixel_cap(policy: FetchPolicy) -> None:
    await expect("image_too_large", data_uri(PNG), policy, max_image_pixels=8 * 6 - 1)


async def test_data_uri_scheme_is_case_insensitive(policy: FetchPolicy) -> None:
    value = "DATA:image/png;base64," + base64.b64encode(PNG).decode()
    assert (await resolve_image_input("f", value, policy=policy, max_image_pixels=CAP)).content == PNG


def test_with_field_returns_a_bound_copy() -> None:
    original = InputError("bad", error_type="image_load_error", input="x")
    bound = original.with_field("image_url")
    assert (bound.field, bound.message, bound.error_type, bound.input) == ("image_url", "bad", "image_load_error", "x")
    assert original.field is None
    assert str(bound) == "bad"
