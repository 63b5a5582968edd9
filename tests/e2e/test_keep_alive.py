"""Idle keep-alive connections: the server must not close one that a client may still reuse.

httpx (fal-client's transport) keeps an idle pooled connection for 5 s (`keepalive_expiry`), undici (Node's
fetch, @fal-ai/client) for 4 s. A server that closes idle connections after the same 5 s (uvicorn's default)
races every reuse near that age: the client sends on a socket the server is closing and gets
`RemoteProtocolError: Server disconnected without sending a response`. Under load both sides lag, the window
grows to seconds, and the load test (docs/reliability.md) lost dozens of requests that way.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.e2e.server import FramecastServer

pytestmark = pytest.mark.e2e

HTTPX_KEEPALIVE_EXPIRY_S = 5.0


def test_an_idle_connection_outlives_the_clients_own_keep_alive_expiry(server: FramecastServer) -> None:
    # This client would reuse its connection for a minute; the server must still have it after the idle time
    # at which fal's clients give theirs up.
    limits = httpx.Limits(max_connections=1, keepalive_expiry=60)
    with httpx.Client(base_url=server.url, verify=str(server.ca_path), limits=limits, timeout=30) as client:
        first = client.get("/health")
        time.sleep(HTTPX_KEEPALIVE_EXPIRY_S + 1)  # the idle time under test, not a synchronisation
        second = client.get("/health")
    assert first.status_code == second.status_code == 200
    # httpx opens a new connection when the server has closed the old one: the same stream means it was reused.
    assert first.extensions["network_stream"] is second.extensions["network_stream"]
