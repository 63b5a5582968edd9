"""Tests for ``framecast.inputs``, plus the helpers they share: a loopback HTTP(S) server, a fake resolver and a
guard that fails any test trying to reach the network beyond loopback."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from typing import Any

import pytest
from PIL import Image

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1"})


def make_image(fmt: str = "PNG", size: tuple[int, int] = (8, 6), color: str = "red", **save: Any) -> bytes:
    """A real, small image encoded with Pillow."""
    buf = BytesIO()
    Image.new("RGB", size, color).save(buf, fmt, **save)
    return buf.getvalue()


class NetworkGuard:
    """Fails connections and DNS look-ups that would leave the machine.

    ``socket.socket.connect``/``connect_ex`` (used by asyncio and therefore httpx) only pass for loopback addresses,
    and ``socket.getaddrinfo`` only for IP literals, so a test can never send a packet (DNS included) elsewhere.
    Refused attempts are recorded and raise, so a test asserting "refused before connecting" cannot pass by
    accident through a swallowed connection error.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.violations: list[object] = []
        self.connections: list[tuple[str, int]] = []
        real_connect = socket.socket.connect
        real_connect_ex = socket.socket.connect_ex
        real_getaddrinfo = socket.getaddrinfo

        def check(address: Any) -> None:
            if isinstance(address, tuple):
                if address[0] not in LOOPBACK_HOSTS:
                    self.violations.append(address)
                    raise ConnectionRefusedError("test network guard: non-loopback connection attempted")
                self.connections.append((address[0], address[1]))

        def connect(sock: socket.socket, address: Any) -> None:
            check(address)
            real_connect(sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> int:
            check(address)
            return real_connect_ex(sock, address)

        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            text = host.decode() if isinstance(host, bytes) else host
            try:
                ipaddress.ip_address(text)
            except (TypeError, ValueError):
                self.violations.append(("dns", host))
                raise socket.gaierror(socket.EAI_NONAME, "test network guard: DNS look-up attempted") from None
            return real_getaddrinfo(host, *args, **kwargs)

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


class FakeResolver:
    """An injectable resolver: a fixed name -> addresses table; unknown names fail like NXDOMAIN."""

    def __init__(self, table: Mapping[str, Sequence[str]] | None = None) -> None:
        self.table = dict(table or {})
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self.table[host])


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]


Route = Callable[["Handler"], None]


@dataclass
class LoopbackServer:
    """State shared between a test and its loopback HTTP(S) server thread."""

    port: int = 0
    scheme: str = "http"
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    sni_names: list[str | None] = field(default_factory=list)
    # Routes that must stall wait on this; the fixture sets it at teardown so their threads can finish.
    release: threading.Event = field(default_factory=threading.Event)
    # Set by a route once it has started stalling, for tests that want to sync on it.
    stalled: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: LoopbackServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that gave up (timeouts, size caps) leave broken pipes behind; those are expected here.
        pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        state = self.server.state
        state.requests.append(RecordedRequest(self.path, {k.lower(): v for k, v in self.headers.items()}))
        route = state.routes.get(self.path.split("?", 1)[0])
        if route is None:
            self.respond(404, b"not found", "text/plain")
            return
        route(self)

    def respond(
        self, status: int, body: bytes = b"", content_type: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        headers = headers or {}
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        for name, value in headers.items():
            self.send_header(name, value)
        if not any(name.lower() == "content-length" for name in headers):
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def stall(self) -> None:
        self.server.state.stalled.set()
        # Bounded only as a safety net for a broken test; the fixture releases it at teardown.
        self.server.state.release.wait(timeout=30)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve(tls: ssl.SSLContext | None = None) -> Iterator[LoopbackServer]:
    """Run a threaded HTTP server (HTTPS with ``tls``) on 127.0.0.1 with a free port."""
    state = LoopbackServer(scheme="https" if tls is not None else "http")
    httpd = _Server(("127.0.0.1", 0), Handler)
    httpd.state = state
    state.port = httpd.server_address[1]
    if tls is not None:

        def record_sni(sock: Any, name: str | None, ctx: ssl.SSLContext) -> None:
            state.sni_names.append(name)

        tls.sni_callback = record_sni
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()
