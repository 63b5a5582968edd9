"""Hostile input through the API (real HTTP requests to the app, in-process): each case is refused with a clear
4xx in the documented error shape, and leaves nothing written: no job, no file in the files or tmp directory, and
no upload in the ledger.

The module-level checks (URL parsing, address rules, image decoding, data URIs) have their own unit tests in
tests/inputs; these prove the same refusals hold end to end, through the routers and the queue service.
SSRF cases run the real resolver path: `localhost` resolves through /etc/hosts, other names through a fake DNS
installed at `socket.getaddrinfo` (what the event loop's resolver calls), and a network guard fails any test
that tries to reach beyond loopback or to look up a name the fake DNS does not know.
"""

from __future__ import annotations

import base64
import io
import math
import socket
import struct
import time
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image

from framecast.api.state import AppState
from framecast.app import create_app
from framecast.inputs import safe_fetch
from framecast.settings import Settings
from framecast.store.credentials import SqlCredentialStore
from framecast.store.jobs import JobStatus
from framecast.store.sql_jobs import SqlJobStore
from framecast.store.uploads import SqlUploadLedger
from tests.api.conftest import make_api_key, png_bytes, png_uri
from tests.inputs import Handler, LoopbackServer, NetworkGuard, serve

pytestmark = pytest.mark.anyio

PUBLIC_URL = "https://gpu.example.com"
MAX_INPUT_BYTES = 64_000
MAX_UPLOAD_BYTES = 30_000
MAX_BODY_BYTES = 200_000
MAX_IMAGE_PIXELS = 1_000_000
SUBMIT = "/queue/fal-ai/wan-i2v"
WAVESPEED_SUBMIT = "/api/v3/fal-ai/wan-i2v"
SECRET = b"the data directory's secret: never served"

# Names the fake DNS answers, as a resolver under an attacker's control would.
FAKE_DNS: dict[str, list[str]] = {
    "metadata.google.internal": ["169.254.169.254"],
    "internal.example.com": ["10.1.2.3"],
    "cgnat.example.com": ["100.64.0.7"],
    "mapped.example.com": ["::ffff:127.0.0.1"],
    "nat64.example.com": ["64:ff9b::a9fe:a9fe"],
    "mixed.example.com": ["93.184.216.34", "192.168.1.10"],
    # The loopback server, for the redirect cases (where 127.0.0.1, and only it, counts as public).
    "public.test": ["127.0.0.1"],
}
# Resolved by the real resolver, from /etc/hosts: no packet leaves the machine.
HOSTS_FILE_NAMES = frozenset({"localhost"})


def wan_input(**overrides: Any) -> dict[str, Any]:
    return {"prompt": "a cat", "image_url": png_uri(), **overrides}


@dataclass
class Server:
    app: FastAPI
    client: httpx.AsyncClient
    store: SqlJobStore
    settings: Settings
    key: str

    @property
    def state(self) -> AppState:
        value: AppState = self.app.state.framecast
        return value

    def files(self) -> list[Path]:
        """Every file under the files and tmp directories."""
        roots = (self.settings.files_dir, self.settings.tmp_dir)
        return sorted(path for root in roots if root.exists() for path in root.rglob("*") if not path.is_dir())

    def assert_nothing_written(self, *, jobs: Sequence[str] = (), files: Sequence[Path] = ()) -> None:
        """No job but `jobs`, no file but `files`, and no upload in the ledger."""
        assert [record.request_id for record in self.store.list_jobs(submitted_by=None, limit=100)] == list(jobs)
        assert self.files() == sorted(files)
        assert SqlUploadLedger(self.store.database).expired_uploads(now=math.inf, limit=100) == []


@pytest.fixture
def network(monkeypatch: pytest.MonkeyPatch) -> Iterator[NetworkGuard]:
    """The network guard, with the fake DNS and the hosts file in front of its refusal of every other name."""
    real_getaddrinfo = socket.getaddrinfo
    guard = NetworkGuard(monkeypatch)
    guarded_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name in HOSTS_FILE_NAMES:
            return real_getaddrinfo(host, port, *args, **kwargs)
        if name in FAKE_DNS:
            return [
                (
                    socket.AF_INET6 if ":" in address else socket.AF_INET,
                    socket.SOCK_STREAM,
                    socket.IPPROTO_TCP,
                    "",
                    (address, int(port), 0, 0) if ":" in address else (address, int(port)),
                )
                for address in FAKE_DNS[name]
            ]
        return guarded_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield guard
    assert guard.violations == [], "a request went beyond loopback or looked up an unknown name"


@pytest.fixture
async def server(tmp_path: Path, network: NetworkGuard) -> AsyncIterator[Server]:
    store = SqlJobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    settings = Settings(
        data_dir=tmp_path,
        public_url=PUBLIC_URL,
        max_input_bytes=MAX_INPUT_BYTES,
        max_upload_bytes=MAX_UPLOAD_BYTES,
        max_body_bytes=MAX_BODY_BYTES,
        max_image_pixels=MAX_IMAGE_PIXELS,
        poll_interval_s=0.01,
    )
    app = create_app(settings, store=store, readiness=lambda _endpoint: None)
    # A file next to the files directory, that no file key may reach.
    (tmp_path / "secret.txt").write_bytes(SECRET)
    key = make_api_key(store)
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Key {key}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as client:
        yield Server(app, client, store, settings, key)


def assert_fal_error(response: httpx.Response, status_code: int, message: str) -> Any:
    """fal's error shape: JSON `{"detail": str}`, or `{"detail": [entries]}` for bad input; `message` in it."""
    assert response.status_code == status_code, response.text
    assert response.headers["content-type"] == "application/json", response.text
    detail = response.json()["detail"]
    text = detail if isinstance(detail, str) else " ".join(str(entry["msg"]) for entry in detail)
    assert message in text, response.text
    return detail


def assert_input_error(response: httpx.Response, field: str, error_type: str, message: str) -> None:
    """A 422 whose only entry names `field`, fal's `error_type` and `message`."""
    detail = assert_fal_error(response, 422, message)
    assert [(entry["loc"], entry["type"]) for entry in detail] == [(["body", field], error_type)], response.text


def assert_wavespeed_error(response: httpx.Response, status_code: int, message: str) -> None:
    assert response.status_code == status_code, response.text
    assert response.headers["content-type"] == "application/json", response.text
    body = response.json()
    assert (body["code"], body["data"]) == (status_code, None), response.text
    assert message in body["message"], response.text


# --- SSRF ----------------------------------------------------------------------------------------------------------

NON_PUBLIC = "points to a non-public network address"
NOT_DOTTED_QUAD = "numeric host that is not a dotted-quad IPv4 address"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        # loopback
        ("http://127.0.0.1/x.png", NON_PUBLIC),
        ("http://127.0.0.2:8080/x.png", NON_PUBLIC),
        ("http://[::1]/x.png", NON_PUBLIC),
        ("http://0.0.0.0/x.png", NON_PUBLIC),
        # link-local and the cloud metadata endpoint
        ("http://169.254.169.254/latest/meta-data/", NON_PUBLIC),
        ("http://[fe80::1]/x.png", NON_PUBLIC),
        # private ranges, carrier-grade NAT, unique-local IPv6
        ("http://10.0.0.1/x.png", NON_PUBLIC),
        ("http://172.16.0.1/x.png", NON_PUBLIC),
        ("http://172.31.255.254/x.png", NON_PUBLIC),
        ("http://192.168.1.1/x.png", NON_PUBLIC),
        ("http://100.64.0.1/x.png", NON_PUBLIC),
        ("http://[fd00::1]/x.png", NON_PUBLIC),
        # IPv4 inside IPv6: mapped, and NAT64 (64:ff9b::/96) of loopback and of the metadata address
        ("http://[::ffff:127.0.0.1]/x.png", NON_PUBLIC),
        ("http://[::ffff:169.254.169.254]/latest/meta-data/", NON_PUBLIC),
        ("http://[::ffff:a9fe:a9fe]/latest/meta-data/", NON_PUBLIC),
        ("http://[64:ff9b::7f00:1]/x.png", NON_PUBLIC),
        ("http://[64:ff9b::a9fe:a9fe]/latest/meta-data/", NON_PUBLIC),
        # decimal, octal, hexadecimal and shortened IPv4 (the C resolver reads each as 127.0.0.1)
        ("http://2130706433/x.png", NOT_DOTTED_QUAD),
        ("http://0177.0.0.1/x.png", "the URL is not a valid URL"),  # httpx itself refuses this one
        ("http://0x7f.0.0.1/x.png", NOT_DOTTED_QUAD),
        ("http://0x7f000001/x.png", NOT_DOTTED_QUAD),
        ("http://127.1/x.png", NOT_DOTTED_QUAD),
        ("http://017700000001/x.png", NOT_DOTTED_QUAD),
        # names that resolve to non-public addresses: the hosts file, and DNS answers
        ("http://localhost/x.png", NON_PUBLIC),
        ("http://localhost:8080/x.png", NON_PUBLIC),
        ("http://metadata.google.internal/computeMetadata/v1/", NON_PUBLIC),
        ("http://internal.example.com/x.png", NON_PUBLIC),
        ("http://cgnat.example.com/x.png", NON_PUBLIC),
        ("http://mapped.example.com/x.png", NON_PUBLIC),
        ("http://nat64.example.com/x.png", NON_PUBLIC),
        ("http://mixed.example.com/x.png", NON_PUBLIC),  # one public and one private answer
        # schemes, credentials and ports that are never fetched
        ("file:///etc/passwd", "must be an http(s) URL or a base64 data: URI"),
        ("gopher://127.0.0.1:6379/_FLUSHALL", "must be an http(s) URL or a base64 data: URI"),
        ("ftp://example.com/x.png", "must be an http(s) URL or a base64 data: URI"),
        ("http://user:password@example.com/x.png", "must not contain credentials"),
        ("http://example.com:6379/x.png", "uses port 6379, which is not allowed"),
        ("http://[fe80::1%25eth0]/x.png", "must not use an IPv6 zone id"),
    ],
)
async def test_ssrf_targets_are_refused_before_connecting(
    server: Server, network: NetworkGuard, url: str, message: str
) -> None:
    response = await server.client.post(SUBMIT, json=wan_input(image_url=url))
    assert_input_error(response, "image_url", "file_download_error", message)
    assert response.json()["detail"][0]["input"] == url
    assert network.connections == []
    server.assert_nothing_written()


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/meta-data/", "http://[::ffff:10.0.0.1]/", "http://localhost/x.png"]
)
async def test_ssrf_targets_are_refused_on_the_wavespeed_api_too(server: Server, url: str) -> None:
    response = await server.client.post(WAVESPEED_SUBMIT, json=wan_input(image_url=url))
    assert_wavespeed_error(response, 400, f"image_url: the URL {NON_PUBLIC}")
    server.assert_nothing_written()


@pytest.fixture
def redirector(server: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackServer]:
    """A loopback server posing as a public host: `public.test` resolves to it, 127.0.0.1 (only) counts as public,
    and its port is allowed. Every other address still goes through the real checks."""
    real = safe_fetch.is_public_address
    monkeypatch.setattr(safe_fetch, "is_public_address", lambda address: address == "127.0.0.1" or real(address))
    with serve() as loopback:
        policy = server.state.queue.fetch_policy
        server.state.queue.fetch_policy = replace(policy, allowed_ports=policy.allowed_ports | {loopback.port})
        yield loopback


def redirect_to(location: str) -> Any:
    def respond(handler: Handler) -> None:
        handler.respond(302, b"", "text/html", {"Location": location})

    return respond


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://10.0.0.1/x.png",
        "http://192.168.0.1/x.png",
        "http://[::1]/x.png",
        "http://[::ffff:10.0.0.1]/x.png",
        "http://[fd12:3456::1]/x.png",
        "http://internal.example.com/x.png",
        "http://2130706433/x.png",
        "file:///etc/passwd",
    ],
)
async def test_redirects_into_private_space_are_refused(
    server: Server, network: NetworkGuard, redirector: LoopbackServer, target: str
) -> None:
    redirector.routes["/start.png"] = redirect_to(target)
    url = f"http://public.test:{redirector.port}/start.png"
    response = await server.client.post(SUBMIT, json=wan_input(image_url=url))
    assert_input_error(response, "image_url", "file_download_error", "a redirect target")
    # The first hop was fetched; the target never was.
    assert [request.path for request in redirector.requests] == ["/start.png"]
    assert network.connections == [("127.0.0.1", redirector.port)]
    server.assert_nothing_written()


async def test_the_redirect_fixture_does_fetch_a_public_target(server: Server, redirector: LoopbackServer) -> None:
    """The control for the case above: the same path, redirected to an allowed target, queues the job."""
    redirector.routes["/start.png"] = redirect_to("/final.png")
    redirector.routes["/final.png"] = lambda handler: handler.respond(200, png_bytes(), "image/png")
    url = f"http://public.test:{redirector.port}/start.png"
    response = await server.client.post(SUBMIT, json=wan_input(image_url=url))
    assert response.status_code == 200, response.text
    assert [request.path for request in redirector.requests] == ["/start.png", "/final.png"]


# --- decompression bombs and oversized data URIs ---------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int, pixels: bytes = b"") -> bytes:
    """An 8-bit greyscale PNG whose header says `width` x `height`, with `pixels` as its compressed data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(pixels, 9))
        + png_chunk(b"IEND", b"")
    )


def zlib_bomb_png(side: int) -> bytes:
    """A real `side` x `side` black PNG: megabytes of pixels in a few kilobytes of zlib."""
    return png_declaring(side, side, b"\x00" * ((side + 1) * side))


def encoded(image_format: str, side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (side, side)).save(buffer, format=image_format, quality=1)
    return buffer.getvalue()


def data_uri(content: bytes, content_type: str = "image/png") -> str:
    return f"data:{content_type};base64," + base64.b64encode(content).decode()


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(lambda: png_declaring(100_000, 100_000), id="png-header-declares-10G-pixels"),
        pytest.param(lambda: png_declaring(MAX_IMAGE_PIXELS + 1, 1), id="png-one-row-over-the-limit"),
        pytest.param(lambda: zlib_bomb_png(4000), id="png-16M-pixels-in-a-tiny-zlib-stream"),
        pytest.param(lambda: encoded("WEBP", 2000), id="webp-4M-pixels"),
        pytest.param(lambda: encoded("JPEG", 2000), id="jpeg-4M-pixels"),
    ],
)
async def test_decompression_bombs_are_refused_by_their_header(server: Server, image: Any) -> None:
    content: bytes = image()
    assert len(content) < MAX_INPUT_BYTES, "the bomb must be small: the pixel limit refuses it, not the byte limit"
    response = await server.client.post(SUBMIT, json=wan_input(image_url=data_uri(content)))
    assert_input_error(response, "image_url", "image_too_large", f"the limit is {MAX_IMAGE_PIXELS} pixels")
    server.assert_nothing_written()


@pytest.mark.parametrize(
    ("content_type", "content", "error_type", "message"),
    [
        ("image/png", b"\x00" * (MAX_INPUT_BYTES + 1), "file_too_large", f"over the limit of {MAX_INPUT_BYTES} bytes"),
        ("image/gif", b"GIF89a" + b"\x00" * 100, "unsupported_content_type", "'image/gif' is not allowed"),
        ("text/html", b"<script>alert(1)</script>", "unsupported_content_type", "'text/html' is not allowed"),
        ("image/png", b"GIF89a\x01\x00\x01\x00" + b"\x00" * 100, "image_load_error", "not a PNG, JPEG or WEBP"),
        ("image/png", png_bytes()[:60], "image_load_error", "truncated or corrupt"),
    ],
)
async def test_oversized_and_disguised_data_uris_are_refused(
    server: Server, content_type: str, content: bytes, error_type: str, message: str
) -> None:
    response = await server.client.post(SUBMIT, json=wan_input(image_url=data_uri(content, content_type)))
    assert_input_error(response, "image_url", error_type, message)
    # The error echoes only the start of a large input.
    assert len(response.content) < 2000
    server.assert_nothing_written()


# --- oversized uploads and bodies -----------------------------------------------------------------------------------

TOO_BIG_UPLOAD = b"\x89PNG" + b"\x00" * MAX_UPLOAD_BYTES
UPLOAD_LIMIT = f"The upload is larger than the limit of {MAX_UPLOAD_BYTES} bytes"


async def streamed(content: bytes, chunk_bytes: int = 8192) -> AsyncIterator[bytes]:
    """The body without a Content-Length (chunked), so the limit must count bytes as they arrive."""
    for start in range(0, len(content), chunk_bytes):
        yield content[start : start + chunk_bytes]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_oversized_direct_upload_is_413_and_keeps_nothing(server: Server, chunked: bool) -> None:
    body = streamed(TOO_BIG_UPLOAD) if chunked else TOO_BIG_UPLOAD
    response = await server.client.post("/files/upload", content=body, headers={"Content-Type": "image/png"})
    assert_fal_error(response, 413, UPLOAD_LIMIT)
    assert response.json()["error_type"] == "file_too_large"
    server.assert_nothing_written()


async def test_oversized_put_to_an_upload_url_is_413_and_keeps_nothing(server: Server) -> None:
    ticket = await server.client.post("/storage/upload/initiate", json={"content_type": "image/png"})
    assert ticket.status_code == 200, ticket.text
    upload_url = ticket.json()["upload_url"].removeprefix(PUBLIC_URL)
    response = await server.client.put(upload_url, content=TOO_BIG_UPLOAD, headers={"Content-Type": "image/png"})
    assert_fal_error(response, 413, UPLOAD_LIMIT)
    server.assert_nothing_written()


async def test_oversized_wavespeed_uploads_are_413_and_keep_nothing(server: Server) -> None:
    binary = await server.client.post(
        "/api/v3/media/upload/binary", files={"file": ("cat.png", TOO_BIG_UPLOAD, "image/png")}
    )
    assert_wavespeed_error(binary, 413, UPLOAD_LIMIT)
    ticket = await server.client.post(
        "/api/v3/media/uploads", json={"filename": "cat.png", "size": MAX_UPLOAD_BYTES + 1, "content_type": "image/png"}
    )
    assert_wavespeed_error(ticket, 413, UPLOAD_LIMIT)
    server.assert_nothing_written()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_over_the_limit_is_413_in_the_api_error_shape(server: Server, chunked: bool) -> None:
    """Starlette's own 413 is plain text; clients parse JSON errors, so it is answered in fal's or WaveSpeed's shape."""
    too_big = b'{"prompt": "' + b"x" * MAX_BODY_BYTES + b'"}'
    headers = {"Content-Type": "application/json"}
    fal = await server.client.post(SUBMIT, content=streamed(too_big) if chunked else too_big, headers=headers)
    assert_fal_error(fal, 413, f"The request body is too large; the limit is {MAX_BODY_BYTES} bytes")
    # WaveSpeed's routes take uploads, so their limit is the upload limit plus the multipart framing.
    over_upload_limit = b'{"prompt": "' + b"x" * (MAX_UPLOAD_BYTES + 2 * 1024 * 1024) + b'"}'
    body = streamed(over_upload_limit) if chunked else over_upload_limit
    wavespeed = await server.client.post(WAVESPEED_SUBMIT, content=body, headers=headers)
    assert_wavespeed_error(wavespeed, 413, "The request body is too large")
    server.assert_nothing_written()


# --- malformed JSON and wrong types ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b'{"prompt": "a cat", "image_url": "data:', "application/json", "JSON decode error: Unterminated string"),
        (b'{"prompt": "a cat",', "application/json", "JSON decode error: Expecting property name"),
        (b"{'prompt': 'a cat'}", "application/json", "JSON decode error"),
        (b'{"prompt": "a", "guide_scale": NaN}', "application/json", "NaN is not valid JSON"),
        (b'{"prompt": "a", "seed": Infinity}', "application/json", "Infinity is not valid JSON"),
        (b'{"prompt": "a", "seed": -Infinity}', "application/json", "-Infinity is not valid JSON"),
        (b"[" * 50_000 + b"]" * 50_000, "application/json", "nested too deeply"),
        (b'{"a":' * 20_000 + b"1" + b"}" * 20_000, "application/json", "nested too deeply"),
        (b'{"prompt": "\xff\xfe"}', "application/json", "not UTF-8"),
        (b"prompt=a+cat&image_url=x", "application/x-www-form-urlencoded", "JSON decode error"),
        (b"<xml/>", "text/xml", "JSON decode error"),
    ],
)
async def test_malformed_json_is_422_and_queues_nothing(
    server: Server, body: bytes, content_type: str, message: str
) -> None:
    response = await server.client.post(SUBMIT, content=body, headers={"Content-Type": content_type})
    detail = assert_fal_error(response, 422, message)
    assert [entry["type"] for entry in detail] == ["json_invalid"]
    wavespeed = await server.client.post(WAVESPEED_SUBMIT, content=body, headers={"Content-Type": content_type})
    assert_wavespeed_error(wavespeed, 400, message)
    server.assert_nothing_written()


@pytest.mark.parametrize("body", [b"[1, 2]", b'"a cat"', b"42", b"null", b"true"])
async def test_a_body_that_is_not_an_object_is_422(server: Server, body: bytes) -> None:
    response = await server.client.post(SUBMIT, content=body, headers={"Content-Type": "application/json"})
    detail = assert_fal_error(response, 422, "valid dictionary")
    assert [entry["loc"] for entry in detail] == [["body"]]
    server.assert_nothing_written()


@pytest.mark.parametrize(
    ("field", "value", "error_type"),
    [
        ("prompt", {"text": "a cat"}, "string_type"),
        ("prompt", ["a", "cat"], "string_type"),
        ("image_url", 42, "string_type"),
        ("image_url", {"url": "https://example.com/x.png"}, "string_type"),
        ("num_frames", "many", "int_parsing"),
        ("num_frames", 81.5, "int_from_float"),
        ("num_frames", 10**30, "less_than_equal"),
        ("num_frames", -1, "greater_than_equal"),
        ("seed", "abc", "int_parsing"),
        ("seed", 2**32, "less_than_equal"),
        ("guide_scale", "strong", "float_parsing"),
        ("resolution", 720, "literal_error"),
        ("resolution", "4k", "literal_error"),
        ("enable_safety_checker", [True], "bool_type"),
        ("enable_safety_checker", "maybe", "bool_parsing"),
    ],
)
async def test_wrong_types_are_422_naming_the_field(server: Server, field: str, value: Any, error_type: str) -> None:
    response = await server.client.post(SUBMIT, json=wan_input(**{field: value}))
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert [(entry["loc"][:2], entry["type"]) for entry in detail] == [(["body", field], error_type)], detail
    assert detail[0]["msg"]
    server.assert_nothing_written()


# --- path traversal in file keys -------------------------------------------------------------------------------------

# httpx resolves a literal `..` before sending, so these are percent-encoded: the app sees the same decoded path
# (`/files/../../secret.txt`) that an ASGI server hands it for a literal one.
TRAVERSALS = [
    "%2e%2e/secret.txt",
    "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "..%2fsecret.txt",
    "uploads/%2e%2e/%2e%2e/secret.txt",
    "%252e%252e%252fsecret.txt",
    "..%5csecret.txt",
    "..\\..\\secret.txt",
    "%2fetc%2fpasswd",
    "/etc/passwd",
    "C:%5cWindows%5cwin.ini",
    ".%2fsecret.txt",
    "uploads/.hidden",
    "uploads/x/%00.png",
    "jobs.db",
]


@pytest.mark.parametrize("key", TRAVERSALS)
async def test_file_keys_cannot_leave_the_files_directory(server: Server, key: str) -> None:
    response = await server.client.get(f"/files/{key}")
    assert_fal_error(response, 404, "File not found")
    assert SECRET not in response.content
    server.assert_nothing_written()


@pytest.fixture
def planted_link(server: Server) -> Path:
    """A file in the files directory that is a symlink to the secret outside it."""
    link = server.settings.files_dir / "uploads" / "0123456789abcdef" / "cat.png"
    link.parent.mkdir(parents=True)
    link.symlink_to(server.settings.data_dir / "secret.txt")
    return link


async def test_a_symlink_out_of_the_files_directory_is_not_followed(server: Server, planted_link: Path) -> None:
    response = await server.client.get("/files/uploads/0123456789abcdef/cat.png")
    assert_fal_error(response, 404, "File not found")
    assert SECRET not in response.content
    as_input = await server.client.post(
        SUBMIT, json=wan_input(image_url=f"{PUBLIC_URL}/files/uploads/0123456789abcdef/cat.png")
    )
    assert_input_error(as_input, "image_url", "file_download_error", "no such file on this server")
    server.assert_nothing_written(files=[planted_link])


@pytest.mark.parametrize("key", ["../secret.txt", "%2e%2e/secret.txt", "uploads/../../secret.txt", "/etc/passwd"])
async def test_an_input_url_on_our_files_cannot_traverse(server: Server, key: str) -> None:
    response = await server.client.post(SUBMIT, json=wan_input(image_url=f"{PUBLIC_URL}/files/{key}"))
    assert_input_error(response, "image_url", "file_download_error", "no such file on this server")
    server.assert_nothing_written()


# --- missing, invalid and revoked keys -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    body: Mapping[str, Any] | None = None
    content: bytes | None = None
    files: Mapping[str, Any] | None = None

    @property
    def is_wavespeed(self) -> bool:
        return self.path.startswith("/api/v3/")


def guarded_routes(request_id: str) -> list[Route]:
    """Every route that needs a key, against a real request where it names one."""
    requests = f"{SUBMIT}/requests/{request_id}"
    return [
        Route("POST", SUBMIT, body=wan_input()),
        Route("POST", "/run/fal-ai/wan-i2v", body=wan_input()),
        Route("GET", f"{requests}/status"),
        Route("GET", f"{requests}/status/stream"),
        Route("GET", requests),
        Route("PUT", f"{requests}/cancel"),
        Route("GET", "/api/requests"),
        Route("POST", "/storage/upload/initiate", body={"content_type": "image/png"}),
        Route("POST", "/storage/auth/token"),
        Route("POST", "/files/upload", content=png_bytes()),
        Route("POST", WAVESPEED_SUBMIT, body=wan_input()),
        Route("POST", WAVESPEED_SUBMIT, body=wan_input(enable_sync_mode=True)),
        Route("GET", f"/api/v3/predictions/{request_id}"),
        Route("GET", f"/api/v3/predictions/{request_id}/result"),
        Route("POST", "/api/v3/media/upload/binary", files={"file": ("cat.png", png_bytes(), "image/png")}),
        Route("POST", "/api/v3/media/uploads", body={"filename": "cat.png", "size": 10}),
        Route("GET", "/api/v3/webhook/secret"),
    ]


def revoked_key(server: Server) -> str:
    key = make_api_key(server.store, "revoked")
    SqlCredentialStore(server.store.database).revoke_api_key("revoked", now=time.time())
    return key


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "Missing API key"),
        ("", "Missing API key"),
        ("Key", "must be 'Key <key>' or 'Bearer <key>'"),
        ("Basic dXNlcjpwYXNzd29yZA==", "must be 'Key <key>' or 'Bearer <key>'"),
        ("Token fc_0123456789ab:secret", "must be 'Key <key>' or 'Bearer <key>'"),
        ("Key not-a-key", "Invalid API key"),
        ("Key fc_0123456789ab:" + "x" * 43, "Invalid API key"),
        ("wrong-secret", "Invalid API key"),
        ("revoked", "has been revoked"),
    ],
    ids=["none", "empty", "no-key", "basic", "unknown-scheme", "malformed", "unknown-id", "wrong-secret", "revoked"],
)
async def test_every_guarded_route_refuses_a_bad_key_and_changes_nothing(
    server: Server, authorization: str | None, message: str
) -> None:
    submitted = await server.client.post(SUBMIT, json=wan_input())
    assert submitted.status_code == 200, submitted.text
    request_id = submitted.json()["request_id"]
    if authorization == "wrong-secret":
        key_id = server.key.split(":")[0]
        authorization = f"Key {key_id}:{'y' * 43}"
    elif authorization == "revoked":
        authorization = f"Bearer {revoked_key(server)}"
    files_before = server.files()
    for route in guarded_routes(request_id):
        # Only this request's header: the client's default (a valid key) must not leak into it.
        transport = httpx.ASGITransport(app=server.app)
        headers = {} if authorization is None else {"Authorization": authorization}
        async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as anonymous:
            response = await anonymous.request(
                route.method, route.path, json=route.body, content=route.content, files=route.files
            )
        where = f"{route.method} {route.path}"
        if route.is_wavespeed:
            assert_wavespeed_error(response, 401, message)
        else:
            assert_fal_error(response, 401, message)
        assert response.headers["WWW-Authenticate"] == 'Key realm="framecast"', where
    record = server.store.get_job(request_id)
    assert record is not None
    assert (record.status, record.cancel_requested_at) == (JobStatus.IN_QUEUE, None)
    server.assert_nothing_written(jobs=[request_id], files=files_before)
