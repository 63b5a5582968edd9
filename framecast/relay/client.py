"""A small client of fal's queue protocol (protocol.md §1), for talking to an upstream server.

The upstream is chosen by the operator (https://queue.fal.run, or another Framecast), so it
is trusted like the bindings file: no SSRF guard, but TLS is verified (`ca_file` for a
private CA) and downloads are capped.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

USER_AGENT = "framecast-relay/0.1"


class UpstreamError(Exception):
    """The upstream answered an error (`status_code` and its body), or could not be reached (`status_code` None).

    `sent` is False only when the request certainly never reached the upstream (connection refused),
    so that retrying a submit cannot create a second upstream job.
    """

    def __init__(self, message: str, *, status_code: int | None = None, body: Any = None, sent: bool = True) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body
        self.sent = sent


@dataclass(frozen=True)
class UpstreamRequest:
    request_id: str
    status_url: str
    response_url: str
    cancel_url: str


class FalQueueClient:
    """`base_url` is the upstream queue's root, e.g. https://queue.fal.run or https://host:8000/queue."""

    def __init__(self, base_url: str, key: str, *, ca_file: str | None = None, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
        self.client = httpx.AsyncClient(
            timeout=timeout_s,
            verify=verify,
            headers={"Authorization": f"Key {key}", "User-Agent": USER_AGENT},
            # Proxies from the environment are the operator's to use for a trusted upstream.
            trust_env=True,
        )
        # Output URLs are plain CDN links: the upstream key must not travel to them.
        self.files = httpx.AsyncClient(timeout=timeout_s, verify=verify, headers={"User-Agent": USER_AGENT})

    async def close(self) -> None:
        await self.client.aclose()
        await self.files.aclose()

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self.client.request(method, url, **kwargs)
        except httpx.ConnectError as error:
            raise UpstreamError(f"could not connect to the upstream: {error}", sent=False) from None
        except httpx.HTTPError as error:
            raise UpstreamError(f"the upstream request failed: {type(error).__name__}: {error}") from None

    async def submit(self, endpoint_id: str, arguments: dict[str, Any], *, headers: dict[str, str]) -> UpstreamRequest:
        """POST the input to the queue. Raises `UpstreamError` for any answer but 200."""
        response = await self._send("POST", f"{self.base_url}/{endpoint_id}", json=arguments, headers=headers)
        body = _json(response)
        if response.status_code != 200 or not isinstance(body, dict) or "request_id" not in body:
            raise UpstreamError(
                f"the upstream refused the request (HTTP {response.status_code})",
                status_code=response.status_code,
                body=body,
            )
        return UpstreamRequest(
            request_id=str(body["request_id"]),
            status_url=str(body["status_url"]),
            response_url=str(body["response_url"]),
            cancel_url=str(body["cancel_url"]),
        )

    async def status(self, upstream: UpstreamRequest) -> dict[str, Any]:
        """The status with its logs (202 and 200 are both fine). Raises `UpstreamError`."""
        response = await self._send("GET", upstream.status_url, params={"logs": "1"})
        body = _json(response)
        if response.status_code not in (200, 202) or not isinstance(body, dict):
            raise UpstreamError(
                f"the upstream status answered HTTP {response.status_code}",
                status_code=response.status_code,
                body=body,
            )
        return body

    async def result(self, upstream: UpstreamRequest) -> tuple[int, Any]:
        """The result: (HTTP status, body); an error result is returned, not raised. Raises `UpstreamError`."""
        response = await self._send("GET", upstream.response_url)
        return response.status_code, _json(response)

    async def cancel(self, upstream: UpstreamRequest) -> int:
        response = await self._send("PUT", upstream.cancel_url)
        return response.status_code

    async def download(self, url: str, destination: Path, *, max_bytes: int) -> int:
        """Stream `url` into `destination`; returns its size. Raises `UpstreamError` (also over `max_bytes`)."""
        size = 0
        try:
            async with self.files.stream("GET", url) as response:
                if response.status_code != 200:
                    raise UpstreamError(f"downloading an output answered HTTP {response.status_code}")
                with destination.open("wb") as handle:
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > max_bytes:
                            raise UpstreamError(f"an output is larger than the limit of {max_bytes} bytes")
                        handle.write(chunk)
        except httpx.HTTPError as error:
            raise UpstreamError(f"downloading an output failed: {type(error).__name__}: {error}") from None
        return size


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {"detail": response.text[:2000]}
