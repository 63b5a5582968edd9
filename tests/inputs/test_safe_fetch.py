from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from dataclasses import replace

import pytest
import trustme

from framecast.inputs import safe_fetch
from framecast.inputs.errors import InputError
from framecast.inputs.safe_fetch import FetchedFile, FetchPolicy, fetch_url, is_public_address

from . import FakeResolver, Handler, LoopbackServer, NetworkGuard, make_image, serve

pytestmark = pytest.mark.anyio

PNG = make_image("PNG")


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with serve() as state:
        state.routes["/x.png"] = lambda h: h.respond(200, PNG, "image/png")
        yield state


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver(
        {
            "pinned.test": ["127.0.0.1"],
            "public.test": ["127.0.0.1"],
            "private.test": ["10.0.0.5"],
            "metadata.test": ["169.254.169.254"],
            "mixed.test": ["93.184.216.34", "10.0.0.5"],
            "mapped.test": ["::ffff:127.0.0.1"],
            "garbage.test": ["not-an-address"],
            "empty.test": [],
        }
    )


def dev_policy(resolver: FakeResolver, **kw: object) -> FetchPolicy:
    """allow_private=True: the loopback server is reachable on its random port."""
    return replace(FetchPolicy(allow_private=True, resolver=resolver), **kw)  # type: ignore[arg-type]


@pytest.fixture
def loopback_is_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test seam: treat 127.0.0.1 (only) as public, so the production path (allow_private=False) can be driven
    against the loopback server while every other address still goes through the real check."""
    real = safe_fetch.is_public_address
    monkeypatch.setattr(safe_fetch, "is_public_address", lambda a: a == "127.0.0.1" or real(a))


def public_policy(server: LoopbackServer, resolver: FakeResolver, **kw: object) -> FetchPolicy:
    base = FetchPolicy(resolver=resolver, allowed_ports=frozenset({80, 443, server.port}))
    return replace(base, **kw)  # type: ignore[arg-type]


async def expect_error(url: str, policy: FetchPolicy, error_type: str = "file_download_error") -> InputError:
    with pytest.raises(InputError) as info:
        await fetch_url(url, policy=policy)
    assert info.value.error_type == error_type, info.value.message
    assert info.value.field is None
    return info.value


# --- success paths ---------------------------------------------------------------------------------------------


async def test_fetches_from_loopback_when_private_allowed(server: LoopbackServer, resolver: FakeResolver) -> None:
    result = await fetch_url(server.url("/x.png"), policy=dev_policy(resolver))
    assert result == FetchedFile(content=PNG, content_type="image/png", final_url=server.url("/x.png"))
    assert resolver.calls == []  # an IP literal needs no look-up
    [request] = server.requests
    assert request.headers["accept-encoding"] == "identity"
    assert request.headers["connection"] == "close"


async def test_connects_to_the_pinned_ip_with_the_original_host_header(
    server: LoopbackServer, resolver: FakeResolver, guard: NetworkGuard
) -> None:
    url = f"http://pinned.test:{server.port}/x.png?a=1"
    result = await fetch_url(url, policy=dev_policy(resolver))
    assert result.content == PNG
    assert result.final_url == url
    assert resolver.calls == [("pinned.test", server.port)]  # resolved exactly once
    [request] = server.requests
    assert request.path == "/x.png?a=1"
    assert request.headers["host"] == f"pinned.test:{server.port}"
    assert guard.connections == [("127.0.0.1", server.port)]


async def test_dns_rebinding_cannot_swap_the_address(
    server: LoopbackServer, guard: NetworkGuard, loopback_is_public: None
) -> None:
    # The first answer passes the check; any later look-up would point at an internal host.
    answers = iter([["127.0.0.1"]])
    calls: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers, ["10.0.0.5"])

    policy = FetchPolicy(resolver=rebinding, allowed_ports=frozenset({server.port}))
    result = await fetch_url(f"http://rebind.test:{server.port}/x.png", policy=policy)
    assert result.content == PNG
    assert calls == ["rebind.test"]
    assert guard.connections == [("127.0.0.1", server.port)]


async def test_production_policy_fetches_a_public_host(
    server: LoopbackServer, resolver: FakeResolver, loopback_is_public: None
) -> None:
    result = await fetch_url(f"http://public.test:{server.port}/x.png", policy=public_policy(server, resolver))
    assert result.content == PNG


async def test_content_type_parameters_are_stripped(server: LoopbackServer, resolver: FakeResolver) -> None:
    server.routes["/p"] = lambda h: h.respond(200, PNG, "Image/PNG; charset=binary")
    result = await fetch_url(server.url("/p"), policy=dev_policy(resolver))
    assert result.content_type == "image/png"


async def test_tries_the_next_validated_address_when_one_refuses(server: LoopbackServer, guard: NetworkGuard) -> None:
    # The server listens on IPv4 only, so the first (validated) address refuses the connection.
    resolver = FakeResolver({"two.test": ["::1", "127.0.0.1"]})
    result = await fetch_url(f"http://two.test:{server.port}/x.png", policy=dev_policy(resolver))
    assert result.content == PNG
    assert guard.connections == [("::1", server.port), ("127.0.0.1", server.port)]


# --- URL-level refusals (before any look-up or connection) -----------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://public.test/x.png",
        "gopher://public.test:70/_",
        "javascript:alert(1)",
        "data:image/png;base64,AAAA",
        "//public.test/x.png",
        "x.png",
        "",
        "http://",
        "http:///x.png",
        "http://user:secret@public.test/x.png",
        "http://user@public.test/x.png",
        "http://exa mple.test/x.png",
        "http://%31%32%37.0.0.1/x.png",
        "http://[::1/x.png",
        "http://[fe80::1%25eth0]/x.png",
        "http://public.test:99999/x.png",
    ],
)
async def test_malformed_or_unsupported_urls_are_refused(url: str, resolver: FakeResolver, guard: NetworkGuard) -> None:
    # Even the permissive dev policy refuses these.
    await expect_error(url, dev_policy(resolver))
    assert resolver.calls == []
    assert guard.connections == []


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/",  # decimal
        "http://0x7f000001/",  # hex
        "http://0177.0.0.1/",  # octal
        "http://0x7f.1/",  # mixed hex, short
        "http://127.1/",  # short form
        "http://127.0.1/",
        "http://127.0.0.1./",  # trailing dot
        "http://1.2.3.0x4/",
        "http://foo.0x10/",
        "http://foo.123/",
    ],
)
async def test_odd_numeric_hosts_are_rejected_outright(url: str, resolver: FakeResolver, guard: NetworkGuard) -> None:
    err = await expect_error(url, dev_policy(resolver))
    assert "numeric host" in err.message or "not a valid URL" in err.message
    assert resolver.calls == []
    assert guard.connections == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.0.0.1:8080/x.png",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[64:ff9b::7f00:1]/",
        "http://[2002:7f00:1::]/",
        "http://0.0.0.0/",
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        "http://[::]/",
        "http://224.0.0.1/",
        "http://255.255.255.255/",
    ],
)
async def test_non_public_literals_are_refused_before_connecting(
    url: str, resolver: FakeResolver, guard: NetworkGuard
) -> None:
    err = await expect_error(url, FetchPolicy(resolver=resolver))
    assert "non-public" in err.message
    # The message must not echo internal detail such as the address that was refused.
    assert "127.0.0.1" not in err.message
    assert guard.connections == []


@pytest.mark.parametrize("host", ["private.test", "metadata.test", "mixed.test", "mapped.test"])
async def test_names_resolving_to_non_public_addresses_are_refused(
    host: str, resolver: FakeResolver, guard: NetworkGuard
) -> None:
    err = await expect_error(f"http://{host}/x.png", FetchPolicy(resolver=resolver))
    assert "non-public" in err.message
    assert "10.0.0.5" not in err.message and "169.254" not in err.message
    assert resolver.calls == [(host, 80)]
    assert guard.connections == []


@pytest.mark.parametrize("host", ["unknown.test", "garbage.test", "empty.test"])
async def test_resolution_failures_are_input_errors(host: str, resolver: FakeResolver) -> None:
    err = await expect_error(f"https://{host}/x.png", FetchPolicy(resolver=resolver))
    assert "could not resolve" in err.message


async def test_disallowed_port_is_refused_before_resolving(resolver: FakeResolver) -> None:
    err = await expect_error("http://public.test:22/x.png", FetchPolicy(resolver=resolver))
    assert "port 22" in err.message
    assert resolver.calls == []


async def test_loopback_server_is_refused_without_allow_private(server: LoopbackServer, resolver: FakeResolver) -> None:
    policy = FetchPolicy(resolver=resolver, allowed_ports=frozenset({server.port}))
    await expect_error(server.url("/x.png"), policy)
    await expect_error(f"http://pinned.test:{server.port}/x.png", policy)
    assert server.requests == []


# --- redirects -------------------------------------------------------------------------------------------------


def redirect(h: Handler, location: str, status: int = 302) -> None:
    h.respond(status, b"", "text/html", {"Location": location})


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirects_are_followed_and_revalidated(
    server: LoopbackServer, resolver: FakeResolver, loopback_is_public: None, status: int
) -> None:
    final = f"http://pinned.test:{server.port}/x.png"
    server.routes["/a"] = lambda h: redirect(h, "/b", status)  # relative: resolved against the host name
    server.routes["/b"] = lambda h: redirect(h, final, status)
    result = await fetch_url(f"http://public.test:{server.port}/a", policy=public_policy(server, resolver))
    assert result.content == PNG
    assert result.final_url == final
    assert [r.path for r in server.requests] == ["/a", "/b", "/x.png"]
    assert [r.headers["host"] for r in server.requests] == [f"public.test:{server.port}"] * 2 + [
        f"pinned.test:{server.port}"
    ]
    # Every hop is resolved again (once each).
    assert resolver.calls == [("public.test", server.port)] * 2 + [("pinned.test", server.port)]


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/",
        "http://[::1]/",
        "http://[fe80::1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://0.0.0.0/",
        "http://2130706433/",
        "http://127.1/",
        "http://private.test/",
        "http://metadata.test/latest/meta-data",
        "http://mixed.test/",
        "http://unknown.test/",
        "http://public.test:22/",
        "http://user:pw@public.test/x.png",
        "file:///etc/passwd",
        "ftp://public.test/x.png",
    ],
)
async def test_redirect_to_a_forbidden_target_is_refused_before_connecting(
    server: LoopbackServer, resolver: FakeResolver, guard: NetworkGuard, loopback_is_public: None, target: str
) -> None:
    server.routes["/r"] = lambda h: redirect(h, target)
    err = await expect_error(f"http://public.test:{server.port}/r", public_policy(server, resolver))
    assert "redirect target" in err.message
    assert [r.path for r in server.requests] == ["/r"]
    assert guard.connections == [("127.0.0.1", server.port)]


@pytest.mark.parametrize(("hops", "ok"), [(3, True), (4, False)])
async def test_redirect_limit(server: LoopbackServer, resolver: FakeResolver, hops: int, ok: bool) -> None:
    for i in range(1, 6):
        server.routes[f"/chain/{i}"] = lambda h, i=i: redirect(h, f"/chain/{i - 1}")
    server.routes["/chain/0"] = lambda h: h.respond(200, PNG, "image/png")
    policy = dev_policy(resolver, max_redirects=3)
    if ok:
        assert (await fetch_url(server.url(f"/chain/{hops}"), policy=policy)).content == PNG
    else:
        err = await expect_error(server.url(f"/chain/{hops}"), policy)
        assert "too many redirects" in err.message
        assert len(server.requests) == 4  # the original request plus 3 redirects, and no more


async def test_redirect_without_location(server: LoopbackServer, resolver: FakeResolver) -> None:
    server.routes["/r"] = lambda h: h.respond(302, b"")
    err = await expect_error(server.url("/r"), dev_policy(resolver))
    assert "Location" in err.message


# --- response checks -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [204, 304, 400, 403, 404, 500])
async def test_non_success_status_is_refused(server: LoopbackServer, resolver: FakeResolver, status: int) -> None:
    server.routes["/s"] = lambda h: h.respond(status, b"" if status in (204, 304) else b"x", "image/png")
    err = await expect_error(server.url("/s"), dev_policy(resolver))
    assert f"HTTP {status}" in err.message


@pytest.mark.parametrize("content_type", ["text/html", "image/svg+xml", "application/octet-stream", "image/gif", None])
async def test_content_type_not_allowed(
    server: LoopbackServer, resolver: FakeResolver, content_type: str | None
) -> None:
    server.routes["/t"] = lambda h: h.respond(200, PNG, content_type)
    await expect_error(server.url("/t"), dev_policy(resolver), "unsupported_content_type")


async def test_compressed_responses_are_refused(server: LoopbackServer, resolver: FakeResolver) -> None:
    server.routes["/gz"] = lambda h: h.respond(200, b"\x1f\x8b...", "image/png", {"Content-Encoding": "gzip"})
    err = await expect_error(server.url("/gz"), dev_policy(resolver))
    assert "Content-Encoding" in err.message


async def test_declared_content_length_over_cap_is_refused_before_the_body(
    server: LoopbackServer, resolver: FakeResolver
) -> None:
    # The server announces a huge body and then sends nothing: only a header check can answer promptly
    # (a body read would stall until the overall timeout, reported as file_download_error).
    def huge(h: Handler) -> None:
        h.respond(200, b"", "image/png", {"Content-Length": str(10**12)})
        h.stall()

    server.routes["/huge"] = huge
    await expect_error(server.url("/huge"), dev_policy(resolver, max_bytes=1000, total_timeout_s=10), "file_too_large")


@pytest.mark.parametrize(("size", "ok"), [(1000, True), (1001, False)])
async def test_content_length_cap_boundary(server: LoopbackServer, resolver: FakeResolver, size: int, ok: bool) -> None:
    server.routes["/n"] = lambda h: h.respond(200, b"\0" * size, "image/png")
    policy = dev_policy(resolver, max_bytes=1000)
    if ok:
        assert len((await fetch_url(server.url("/n"), policy=policy)).content) == size
    else:
        await expect_error(server.url("/n"), policy, "file_too_large")


def chunked(h: Handler, chunks: list[bytes], *, then_stall: bool = False) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "image/png")
    h.send_header("Transfer-Encoding", "chunked")
    h.send_header("Connection", "close")
    h.end_headers()
    for chunk in chunks:
        h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    if then_stall:
        h.stall()
    h.wfile.write(b"0\r\n\r\n")


async def test_chunked_body_within_cap(server: LoopbackServer, resolver: FakeResolver) -> None:
    server.routes["/c"] = lambda h: chunked(h, [b"a" * 100] * 10)
    result = await fetch_url(server.url("/c"), policy=dev_policy(resolver, max_bytes=1000))
    assert result.content == b"a" * 1000


async def test_chunked_body_over_cap_is_cut_off_while_streaming(server: LoopbackServer, resolver: FakeResolver) -> None:
    # No Content-Length; the body never ends. Only the running byte count can refuse it promptly.
    server.routes["/c"] = lambda h: chunked(h, [b"a" * 100] * 11, then_stall=True)
    policy = dev_policy(resolver, max_bytes=1000, total_timeout_s=10)
    await expect_error(server.url("/c"), policy, "file_too_large")


async def test_total_timeout(server: LoopbackServer, resolver: FakeResolver) -> None:
    server.routes["/slow"] = lambda h: h.stall()
    err = await expect_error(server.url("/slow"), dev_policy(resolver, total_timeout_s=0.5))
    assert "longer than 0.5 s" in err.message
    assert server.stalled.is_set()


async def test_read_timeout(server: LoopbackServer, resolver: FakeResolver) -> None:
    server.routes["/slow"] = lambda h: h.stall()
    err = await expect_error(server.url("/slow"), dev_policy(resolver, read_timeout_s=0.2, total_timeout_s=10))
    assert "timed out" in err.message


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_connection_refused_is_an_input_error(resolver: FakeResolver, unused_port: int) -> None:
    err = await expect_error(f"http://127.0.0.1:{unused_port}/x.png", dev_policy(resolver))
    assert "could not connect" in err.message


# --- https: pinned IP, certificate checked against the host name ----------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_server_context(ca: trustme.CA, name: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(ctx)
    return ctx


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


async def test_https_uses_the_host_name_for_sni_and_certificate(
    ca: trustme.CA, resolver: FakeResolver, guard: NetworkGuard
) -> None:
    with serve(tls_server_context(ca, "pinned.test")) as tls_server:
        tls_server.routes["/x.png"] = lambda h: h.respond(200, PNG, "image/png")
        url = f"https://pinned.test:{tls_server.port}/x.png"
        result = await fetch_url(url, policy=dev_policy(resolver, ssl_context=client_context(ca)))
        assert result.content == PNG
        assert tls_server.sni_names == ["pinned.test"]
        assert tls_server.requests[0].headers["host"] == f"pinned.test:{tls_server.port}"
        assert guard.connections == [("127.0.0.1", tls_server.port)]


async def test_https_certificate_for_another_name_is_refused(ca: trustme.CA, resolver: FakeResolver) -> None:
    with serve(tls_server_context(ca, "other.test")) as tls_server:
        url = f"https://pinned.test:{tls_server.port}/x.png"
        err = await expect_error(url, dev_policy(resolver, ssl_context=client_context(ca)))
        assert "TLS" in err.message
        assert tls_server.requests == []


# --- is_public_address -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("1.1.1.1", True),
        ("93.184.216.34", True),
        ("2606:4700::1111", True),
        ("2001:4860:4860::8888", True),
        ("::ffff:8.8.8.8", True),  # IPv4-mapped: judged by the IPv4 address
        ("64:ff9b::808:808", True),  # NAT64 of 8.8.8.8
        ("127.0.0.1", False),
        ("127.255.255.254", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("172.31.255.255", False),
        ("192.168.0.1", False),
        ("100.64.0.1", False),  # CGNAT
        ("100.127.255.254", False),
        ("0.0.0.0", False),
        ("0.1.2.3", False),
        ("169.254.169.254", False),  # cloud metadata
        ("169.254.0.1", False),
        ("192.0.0.8", False),
        ("192.0.2.1", False),
        ("198.18.0.1", False),
        ("198.51.100.7", False),
        ("203.0.113.9", False),
        ("224.0.0.1", False),
        ("239.255.255.250", False),
        ("240.0.0.1", False),
        ("255.255.255.255", False),
        ("::", False),
        ("::1", False),
        ("::127.0.0.1", False),  # deprecated IPv4-compatible
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("64:ff9b:1::808:808", False),  # local-use NAT64
        ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
        ("2002:a00:1::1", False),  # 6to4 of 10.0.0.1
        ("2001::1", False),  # Teredo
        ("2001:db8::1", False),
        ("100::1", False),
        ("fc00::1", False),
        ("fd12:3456::1", False),
        ("fe80::1", False),
        ("fe80::1%eth0", False),
        ("fec0::1", False),
        ("ff02::1", False),
        ("ff0e::1", False),
        ("localhost", False),
        ("example.com", False),
        ("", False),
        ("2130706433", False),
        ("0177.0.0.1", False),
        ("[::1]", False),
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    assert is_public_address(address) is public


def test_policy_defaults() -> None:
    policy = FetchPolicy()
    assert policy.max_bytes == 20 * 1024 * 1024
    assert (policy.connect_timeout_s, policy.read_timeout_s, policy.total_timeout_s) == (5.0, 10.0, 30.0)
    assert policy.max_redirects == 3
    assert policy.allowed_content_types == frozenset({"image/png", "image/jpeg", "image/webp"})
    assert policy.allowed_ports == frozenset({80, 443, 8080, 8443})
    assert policy.allow_private is False
    assert policy.resolver is None
