"""fal's proxy protocol (`/api/fal/proxy` + `x-fal-target-url`): the mapping alone, then through the real app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from framecast.api.proxy import PROXY_PATH, FalProxyMiddleware
from framecast.app import create_app
from framecast.settings import Settings
from framecast.store.sql_jobs import SqlJobStore
from tests.api.conftest import make_api_key, png_uri

pytestmark = pytest.mark.anyio

TARGET = "x-fal-target-url"


class Echo:
    """The app behind the middleware: answers with what it was called with."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        seen = {
            "method": scope["method"],
            "path": scope["path"],
            "raw_path": scope["raw_path"].decode(),
            "query": scope["query_string"].decode(),
            "headers": {key.decode(): value.decode() for key, value in scope["headers"]},
            "body": body.decode(),
        }
        await JSONResponse(seen)(scope, receive, send)


@pytest.fixture
def echo() -> Echo:
    return Echo()


@pytest.fixture
async def echo_client(echo: Echo) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=FalProxyMiddleware(echo))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@pytest.mark.parametrize(
    ("target", "route"),
    [
        ("https://queue.fal.run/fal-ai/wan-i2v", "/queue/fal-ai/wan-i2v"),
        (
            "https://queue.fal.run/fal-ai/wan-i2v/requests/abc/status?logs=1",
            "/queue/fal-ai/wan-i2v/requests/abc/status?logs=1",
        ),
        ("https://fal.run/fal-ai/wan-i2v", "/run/fal-ai/wan-i2v"),
        (
            "https://rest.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3",
            "/storage/upload/initiate?storage_type=fal-cdn-v3",
        ),
        (
            "HTTPS://Queue.Fal.Run/fal-ai/x?fal_webhook=https%3A%2F%2Fh%2Fk%3Fa%3D1",
            "/queue/fal-ai/x?fal_webhook=https%3A%2F%2Fh%2Fk%3Fa%3D1",
        ),
        ("https://rest.fal.ai", "/"),
    ],
)
async def test_target_host_picks_the_route_and_keeps_its_query(
    echo_client: httpx.AsyncClient, target: str, route: str
) -> None:
    response = await echo_client.get(PROXY_PATH, headers={TARGET: target})
    assert response.status_code == 200
    seen = response.json()
    path, _, query = route.partition("?")
    assert (seen["path"], seen["raw_path"], seen["query"]) == (path, path, query)


async def test_percent_encoding_stays_in_raw_path_only(echo_client: httpx.AsyncClient) -> None:
    response = await echo_client.get(PROXY_PATH, headers={TARGET: "https://queue.fal.run/fal-ai/a%20b"})
    seen = response.json()
    assert (seen["path"], seen["raw_path"]) == ("/queue/fal-ai/a b", "/queue/fal-ai/a%20b")


@pytest.mark.parametrize("method", ["POST", "PUT", "GET", "DELETE"])
async def test_method_headers_and_body_pass_through(echo_client: httpx.AsyncClient, method: str) -> None:
    headers = {
        TARGET: "https://queue.fal.run/fal-ai/wan-i2v",
        "Authorization": "Key secret-key",
        "X-Fal-Queue-Priority": "low",
        "Content-Type": "application/json",
    }
    body = b'{"prompt": "p"}' if method in ("POST", "PUT") else b""
    response = await echo_client.request(method, PROXY_PATH, headers=headers, content=body)
    seen = response.json()
    assert seen["method"] == method
    assert seen["body"] == body.decode()
    for name, value in headers.items():
        assert seen["headers"][name.lower()] == value


async def test_missing_header_is_400(echo_client: httpx.AsyncClient, echo: Echo) -> None:
    response = await echo_client.post(PROXY_PATH, json={"prompt": "p"})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert TARGET in response.json()["detail"]
    assert echo.calls == 0


@pytest.mark.parametrize(
    "target",
    [
        "http://queue.fal.run/fal-ai/wan-i2v",
        "https://example.com/fal-ai/wan-i2v",
        "https://queue.fal.run.example.com/fal-ai/wan-i2v",
        "https://queue.fal.run:8443/fal-ai/wan-i2v",
        "https://user@queue.fal.run/fal-ai/wan-i2v",
        "https://v3.fal.media/files/upload",
        "https://fal.run/../files/outputs/x.mp4",
        "https://rest.fal.ai/files/%2e%2e/framecast.db",
        "https://[::1/x",
        "/queue/fal-ai/wan-i2v",
        "",
    ],
)
async def test_other_targets_are_refused_and_never_served(
    echo_client: httpx.AsyncClient, echo: Echo, target: str
) -> None:
    response = await echo_client.get(PROXY_PATH, headers={TARGET: target})
    assert response.status_code == 400
    detail = response.json()["detail"]
    for host in ("queue.fal.run", "fal.run", "rest.fal.ai"):
        assert f"https://{host}/" in detail
    assert echo.calls == 0


async def test_other_paths_are_untouched(echo_client: httpx.AsyncClient) -> None:
    headers = {TARGET: "https://fal.run/fal-ai/wan-i2v"}
    for path in ("/queue/fal-ai/wan-i2v", PROXY_PATH + "/more"):
        seen = (await echo_client.get(path, headers=headers, params={"x": "1"})).json()
        assert (seen["path"], seen["query"]) == (path, "x=1")


async def test_path_is_configurable(echo: Echo) -> None:
    transport = httpx.ASGITransport(app=FalProxyMiddleware(echo, path="/fal"))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        seen = (await client.get("/fal", headers={TARGET: "https://fal.run/a/b"})).json()
        assert seen["path"] == "/run/a/b"
        assert (await client.get(PROXY_PATH)).json()["path"] == PROXY_PATH


# Through the real app, as `@fal-ai/client` with `proxyUrl: {url, when: "always"}` calls it.


@pytest.fixture
async def app_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    store = SqlJobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    settings = Settings(data_dir=tmp_path, public_url="https://gpu.example.com")
    app = create_app(settings, store=store, readiness=lambda _endpoint: None)
    headers = {"Authorization": f"Key {make_api_key(store)}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as client:
        yield client


async def proxied(client: httpx.AsyncClient, method: str, target: str, **kwargs: Any) -> httpx.Response:
    headers = {TARGET: target, "Content-Type": "application/json", "Accept": "application/json"}
    return await client.request(method, PROXY_PATH, headers=headers, **kwargs)


async def test_queue_round_trip_through_the_proxy(app_client: httpx.AsyncClient) -> None:
    queue = "https://queue.fal.run/fal-ai/wan-i2v"
    submitted = await proxied(app_client, "POST", queue, json={"prompt": "p", "image_url": png_uri()})
    assert submitted.status_code == 200
    request_id = submitted.json()["request_id"]
    assert submitted.headers["x-fal-request-id"] == request_id
    # Response URLs name our server, not fal's: the proxy changes the route, not the request's origin.
    assert (
        submitted.json()["status_url"] == f"https://gpu.example.com/queue/fal-ai/wan-i2v/requests/{request_id}/status"
    )

    status = await proxied(app_client, "GET", f"{queue}/requests/{request_id}/status?logs=1")
    assert (status.status_code, status.json()["status"], status.json()["queue_position"]) == (202, "IN_QUEUE", 0)
    direct = await app_client.get(f"/queue/fal-ai/wan-i2v/requests/{request_id}/status", params={"logs": "1"})
    assert status.json() == direct.json()

    cancelled = await proxied(app_client, "PUT", f"{queue}/requests/{request_id}/cancel")
    assert (cancelled.status_code, cancelled.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
    result = await proxied(app_client, "GET", f"{queue}/requests/{request_id}")
    assert result.status_code == 499
    assert result.json()["error_type"] == "client_cancelled"


async def test_run_and_rest_hosts_reach_their_routes(app_client: httpx.AsyncClient) -> None:
    invalid = await proxied(app_client, "POST", "https://fal.run/fal-ai/wan-i2v", json={"image_url": png_uri()})
    assert invalid.status_code == 422
    assert ["body", "prompt"] in [entry["loc"] for entry in invalid.json()["detail"]]
    unknown = await proxied(app_client, "POST", "https://fal.run/fal-ai/no-such-model", json={})
    assert unknown.status_code == 404
    health = await proxied(app_client, "GET", "https://rest.fal.ai/health")
    assert (health.status_code, health.json()["status"]) == (200, "ok")


async def test_app_refuses_a_foreign_target(app_client: httpx.AsyncClient) -> None:
    response = await proxied(app_client, "POST", "https://api.example.com/fal-ai/wan-i2v", json={})
    assert response.status_code == 400
    assert "queue.fal.run" in response.json()["detail"]


async def test_the_key_travels_and_is_still_required(app_client: httpx.AsyncClient) -> None:
    target = "https://queue.fal.run/fal-ai/wan-i2v"
    body = {"prompt": "p", "image_url": png_uri()}
    without_key = await app_client.post(PROXY_PATH, headers={TARGET: target, "Authorization": ""}, json=body)
    assert without_key.status_code == 401
    wrong_key = await app_client.post(PROXY_PATH, headers={TARGET: target, "Authorization": "Key nope"}, json=body)
    assert wrong_key.status_code == 401
    assert (await proxied(app_client, "POST", target, json=body)).status_code == 200


async def test_storage_initiate_through_the_proxy(app_client: httpx.AsyncClient) -> None:
    response = await proxied(
        app_client,
        "POST",
        "https://rest.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3",
        json={"content_type": "image/png", "file_name": "cat.png"},
    )
    assert response.status_code == 200
    assert response.json()["upload_url"].startswith("https://gpu.example.com/")
    assert response.json()["file_url"].startswith("https://gpu.example.com/files/uploads/")
