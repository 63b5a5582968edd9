"""SSRF-safe fetching of user-supplied http(s) URLs.

Technique (see docs: infra design section 4): parse and validate the URL, resolve the host name once, require that
*every* resolved address is public, then connect to the validated IP itself (the URL host is rewritten to the IP;
the original ``Host`` header and, for https, the TLS SNI/certificate hostname are kept), so a DNS answer that
changes between check and connect (DNS rebinding) cannot redirect us. Redirects are never followed by httpx; each
hop is re-validated here. The body is capped by ``Content-Length`` and by a running byte count, and the whole
fetch by an overall deadline. A fresh client per hop with keep-alive disabled means no connection is reused across
hosts, and ``trust_env=False`` keeps proxy environment variables from routing around the pinning.

Numeric host names in non-canonical forms (``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``) are **rejected
outright**: any host whose last label is a number (the WHATWG URL rule) must be a canonical dotted-quad IPv4
address. The C resolver would read those forms as IPv4 addresses, and refusing them is simpler to reason about
than re-implementing ``inet_aton``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import re
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

import httpx

from framecast.inputs.errors import FILE_DOWNLOAD_ERROR, FILE_TOO_LARGE, UNSUPPORTED_CONTENT_TYPE, InputError

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(hostname, port) -> IP address strings``; raises ``OSError`` (e.g. ``socket.gaierror``) when it fails."""

_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_OK_STATUSES = frozenset({200, 203})
_USER_AGENT = "framecast-fetch/0.1"
_HOSTNAME = re.compile(r"(?:[a-z0-9_-]+\.)*[a-z0-9_-]+\.?")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")

# Belt and braces on top of ``is_global``, whose exact tables changed between Python patch releases.
_DENIED_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches localhost on Linux
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT, often the provider's internal network
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, incl. the cloud metadata endpoint 169.254.169.254
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, incl. broadcast
    )
)
_DENIED_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/8",  # unspecified, loopback, IPv4-compatible, and local-use NAT64 64:ff9b:1::/48
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments, incl. Teredo 2001::/32
        "2001:db8::/32",  # documentation
        "fc00::/7",  # unique-local
        "fe80::/10",  # link-local
        "fec0::/10",  # deprecated site-local
        "ff00::/8",  # multicast
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for :func:`fetch_url`. Sizes are bytes, times are seconds.

    ``allow_private`` is for tests and local development only: it lets loopback/private/link-local addresses and
    any port through (odd numeric host forms, userinfo and non-http(s) schemes are still refused).
    ``resolver`` maps ``(host, port)`` to IP strings; ``None`` uses the event loop's ``getaddrinfo``.
    ``ssl_context`` verifies https servers; ``None`` uses httpx's default (certifi CA bundle, hostname checks).
    """

    max_bytes: int = 20 * 1024 * 1024
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0
    total_timeout_s: float = 30.0
    max_redirects: int = 3
    allowed_content_types: frozenset[str] = frozenset({"image/png", "image/jpeg", "image/webp"})
    allowed_ports: frozenset[int] = frozenset({80, 443, 8080, 8443})
    allow_private: bool = False
    resolver: Resolver | None = None
    ssl_context: ssl.SSLContext | None = None


@dataclass(frozen=True)
class FetchedFile:
    """A downloaded body. ``content_type`` is the response header's media type (lower-case, parameters stripped),
    i.e. what the server *claims*; sniff the real type before trusting it. ``final_url`` is the URL after
    redirects, with its original host name."""

    content: bytes
    content_type: str
    final_url: str


@dataclass(frozen=True)
class _Target:
    url: httpx.URL  # as given, host name kept: used for Host, SNI, and resolving relative redirects
    host: str  # ASCII (IDNA) host; IPv6 without brackets
    port: int
    is_literal: bool  # an IP literal: no DNS lookup and no SNI


def is_public_address(address: str) -> bool:
    """True when ``address`` (an IPv4/IPv6 literal) is globally routable and not special-purpose.

    IPv4 embedded in IPv6 (IPv4-mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``) is judged
    by the IPv4 address it reaches. Anything that does not parse, and IPv6 with a zone id, is not public.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return _is_public_ip(ip)


def _is_public_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:
            return False
        if ip.ipv4_mapped is not None:
            return _is_public_ip(ip.ipv4_mapped)
        if ip in _NAT64:
            return _is_public_ip(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None and not _is_public_ip(ip.sixtofour):
            return False
        denied = any(ip in net for net in _DENIED_V6)
    else:
        denied = any(ip in net for net in _DENIED_V4)
    return not (
        denied
        or not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


async def fetch_url(url: str, *, policy: FetchPolicy) -> FetchedFile:
    """Download ``url`` (http or https) under ``policy`` and return its body.

    The caller must still sniff the real type of ``content`` (e.g. by decoding the image).

    Raises:
        InputError: ``file_download_error`` for a refused URL (scheme, credentials, port, odd numeric host,
            non-public address, too many redirects) and for every network failure, HTTP error status and timeout;
            ``file_too_large`` when the body exceeds ``policy.max_bytes``; ``unsupported_content_type`` when the
            response's ``Content-Type`` is not in ``policy.allowed_content_types``. Nothing else is raised for
            network problems. Messages never include resolved addresses or library error text.
    """
    try:
        async with asyncio.timeout(policy.total_timeout_s):
            return await _fetch(url, policy)
    except TimeoutError:
        raise _download_error(f"fetching the URL took longer than {policy.total_timeout_s:g} s") from None


async def _fetch(url: str, policy: FetchPolicy) -> FetchedFile:
    target = _parse_target(url, policy, what="the URL")
    for hop in range(policy.max_redirects + 1):
        what = "the URL" if hop == 0 else "a redirect target"
        addresses = await _resolve(target, policy, what=what)
        try:
            outcome = await _get_once(target, addresses, policy)
        except httpx.TimeoutException:
            raise _download_error(f"timed out fetching {what}") from None
        except httpx.ConnectError:
            # Also TLS handshake and certificate failures.
            raise _download_error(f"could not connect to {what} (connection or TLS handshake failed)") from None
        except (httpx.HTTPError, httpx.InvalidURL, OSError):
            raise _download_error(f"the download of {what} failed") from None
        if isinstance(outcome, FetchedFile):
            return outcome
        target = _parse_target(str(outcome), policy, what="a redirect target")
    raise _download_error(f"too many redirects (more than {policy.max_redirects})")


async def post_bytes(
    url: str, content: bytes, *, headers: Mapping[str, str], policy: FetchPolicy, max_response_bytes: int = 65536
) -> int:
    """POST ``content`` to ``url`` under the same address rules as :func:`fetch_url` and return the status code.

    For outgoing webhooks: redirects are not followed (a 3xx is returned as it is), and at most
    ``max_response_bytes`` of the answer are read, then dropped.

    Raises:
        InputError: ``file_download_error`` for a refused URL, a network failure or a timeout (messages as in
            :func:`fetch_url`, naming "the URL").
    """
    try:
        async with asyncio.timeout(policy.total_timeout_s):
            target = _parse_target(url, policy, what="the URL")
            addresses = await _resolve(target, policy, what="the URL")
            return await _post_once(target, addresses, content, headers, policy, max_response_bytes)
    except TimeoutError:
        raise _download_error(f"the request took longer than {policy.total_timeout_s:g} s") from None
    except httpx.TimeoutException:
        raise _download_error("timed out sending to the URL") from None
    except httpx.ConnectError:
        raise _download_error("could not connect to the URL (connection or TLS handshake failed)") from None
    except (httpx.HTTPError, httpx.InvalidURL, OSError):
        raise _download_error("the request to the URL failed") from None


async def _post_once(
    target: _Target,
    addresses: list[str],
    content: bytes,
    headers: Mapping[str, str],
    policy: FetchPolicy,
    max_response_bytes: int,
) -> int:
    async with _open_pinned("POST", target, addresses, headers, policy, content=content) as response:
        received = 0
        async for chunk in response.aiter_raw():
            received += len(chunk)
            if received > max_response_bytes:
                break
        return response.status_code


@contextlib.asynccontextmanager
async def _open_pinned(
    method: str,
    target: _Target,
    addresses: list[str],
    headers: Mapping[str, str],
    policy: FetchPolicy,
    *,
    content: bytes | None = None,
) -> AsyncIterator[httpx.Response]:
    """One request to the first validated address that accepts a connection; the response streams until exit."""
    request_headers = {
        **headers,
        "Host": target.url.netloc.decode("ascii"),
        # Raw bytes only: a compressed body could expand far beyond max_bytes inside a single chunk.
        "Accept-Encoding": "identity",
        "Connection": "close",
        "User-Agent": _USER_AGENT,
    }
    for index, address in enumerate(addresses):
        async with _pinned_client(policy) as client:
            request = client.build_request(
                method,
                target.url.copy_with(host=address),
                headers=request_headers,
                content=content,
                extensions=_tls_extensions(target),
            )
            try:
                response = await client.send(request, stream=True)
            except httpx.ConnectError:
                if index + 1 < len(addresses):
                    continue
                raise
            try:
                yield response
            finally:
                await response.aclose()
            return
    raise _download_error("could not connect to the host")  # unreachable: addresses is never empty


def _tls_extensions(target: _Target) -> dict[str, object]:
    if target.url.scheme == "https" and not target.is_literal:
        # We connect to an IP, so tell TLS which name to send (SNI) and to verify the certificate against.
        return {"sni_hostname": target.host.rstrip(".")}
    return {}


def _pinned_client(policy: FetchPolicy) -> httpx.AsyncClient:
    """A one-shot client: no proxies from the environment, no redirects, no connection reuse across hosts."""
    timeout = httpx.Timeout(
        connect=policy.connect_timeout_s,
        read=policy.read_timeout_s,
        write=policy.read_timeout_s,
        pool=policy.connect_timeout_s,
    )
    verify = policy.ssl_context if policy.ssl_context is not None else _default_ssl_context()
    return httpx.AsyncClient(
        timeout=timeout,
        verify=verify,
        trust_env=False,
        follow_redirects=False,
        limits=httpx.Limits(max_keepalive_connections=0),
    )


def _parse_target(raw: str, policy: FetchPolicy, *, what: str) -> _Target:
    try:
        url = httpx.URL(raw)
        host = url.raw_host.decode("ascii").lower()
    except (httpx.InvalidURL, TypeError, ValueError):
        # UnicodeError is a ValueError.
        raise _download_error(f"{what} is not a valid URL") from None
    if url.scheme not in _DEFAULT_PORTS:
        raise _download_error(f"{what} must use http or https")
    if url.userinfo:
        raise _download_error(f"{what} must not contain credentials (user:password@)")
    if not host:
        raise _download_error(f"{what} has no host")

    if ":" in host:
        # httpx has stripped the brackets; zone ids ("%25eth0") only make sense for non-global addresses.
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _download_error(f"{what} has an invalid IPv6 address") from None
        if "%" in host:
            raise _download_error(f"{what} must not use an IPv6 zone id")
        is_literal = True
    else:
        if len(host) > 253 or not _HOSTNAME.fullmatch(host):
            raise _download_error(f"{what} has an invalid host name")
        is_literal = _is_numeric_host(host)
        if is_literal:
            try:
                canonical = str(ipaddress.IPv4Address(host))
            except ValueError:
                canonical = None
            if canonical != host:
                raise _download_error(f"{what} has a numeric host that is not a dotted-quad IPv4 address")

    port = url.port if url.port is not None else _DEFAULT_PORTS[url.scheme]
    if not 0 < port < 65536:
        raise _download_error(f"{what} has an invalid port")
    if not policy.allow_private and port not in policy.allowed_ports:
        allowed = ", ".join(str(p) for p in sorted(policy.allowed_ports))
        raise _download_error(f"{what} uses port {port}, which is not allowed (allowed: {allowed})")
    return _Target(url=url, host=host, port=port, is_literal=is_literal)


def _is_numeric_host(host: str) -> bool:
    # WHATWG URL "ends in a number": such hosts are parsed as IPv4 in any base and with fewer than four parts.
    labels = host.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()
    return _NUMERIC_LABEL.fullmatch(labels[-1]) is not None


async def _resolve(target: _Target, policy: FetchPolicy, *, what: str) -> list[str]:
    """Resolve once and check every address; the returned addresses are the only ones we may connect to."""
    if target.is_literal:
        candidates = [target.host]
    else:
        resolver = policy.resolver if policy.resolver is not None else _system_resolver
        try:
            candidates = list(await resolver(target.host, target.port))
        except (OSError, UnicodeError):
            raise _download_error(f"could not resolve the host of {what}") from None
    try:
        addresses = [str(ipaddress.ip_address(candidate)) for candidate in candidates]
    except ValueError:
        raise _download_error(f"could not resolve the host of {what}") from None
    if not addresses:
        raise _download_error(f"could not resolve the host of {what}")
    # One private answer is enough to refuse: otherwise an attacker's DNS mixes a public and an internal address.
    if not policy.allow_private and not all(is_public_address(a) for a in addresses):
        raise _download_error(f"{what} points to a non-public network address")
    return addresses


async def _system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def _get_once(target: _Target, addresses: list[str], policy: FetchPolicy) -> FetchedFile | httpx.URL:
    """One GET to the first reachable validated address; returns the body, or the next URL for a redirect."""
    accept = {"Accept": ", ".join(sorted(policy.allowed_content_types))}
    async with _open_pinned("GET", target, addresses, accept, policy) as response:
        return await _read_response(response, target, policy)


async def _read_response(response: httpx.Response, target: _Target, policy: FetchPolicy) -> FetchedFile | httpx.URL:
    status = response.status_code
    if status in _REDIRECT_STATUSES:
        location = response.headers.get("location")
        if not location:
            raise _download_error(f"the server answered HTTP {status} without a Location header")
        try:
            # Relative to the URL with its host name, not to the IP we connected to.
            return target.url.join(location)
        except (httpx.InvalidURL, TypeError, ValueError):
            raise _download_error("the server redirected to an invalid URL") from None
    if status not in _OK_STATUSES:
        raise _download_error(f"the server answered HTTP {status}")

    content_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type not in policy.allowed_content_types:
        allowed = ", ".join(sorted(policy.allowed_content_types))
        shown = repr(content_type[:100]) if content_type else "missing"
        raise InputError(f"the URL's content type is {shown}; allowed: {allowed}", error_type=UNSUPPORTED_CONTENT_TYPE)
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise _download_error("compressed responses (Content-Encoding) are not supported")

    declared = response.headers.get("content-length")
    if declared is not None:
        try:
            declared_size = int(declared)
        except ValueError:
            raise _download_error("the server sent an invalid Content-Length") from None
        if declared_size > policy.max_bytes:
            raise _too_large(policy.max_bytes)
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > policy.max_bytes:
            raise _too_large(policy.max_bytes)
    return FetchedFile(content=bytes(body), content_type=content_type, final_url=str(target.url))


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle costs tens of milliseconds; a context is safe to share, a client per hop is not.
    return httpx.create_ssl_context()


def _download_error(message: str) -> InputError:
    return InputError(message, error_type=FILE_DOWNLOAD_ERROR)


def _too_large(max_bytes: int) -> InputError:
    return InputError(f"the file is larger than the limit of {max_bytes} bytes", error_type=FILE_TOO_LARGE)
