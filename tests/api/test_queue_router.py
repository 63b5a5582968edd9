"""The queue routers in-process (httpx ASGITransport), with a store but no workers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from framecast.app import create_app
from framecast.settings import Settings
from framecast.store.jobs import JobOutcome
from framecast.store.sql_jobs import SqlJobStore
from tests.api.conftest import make_api_key, png_uri

pytestmark = pytest.mark.anyio


def wan_input(**overrides: Any) -> dict[str, Any]:
    return {"prompt": "p", "image_url": png_uri(), **overrides}


@pytest.fixture
def store(tmp_path: Path) -> SqlJobStore:
    return SqlJobStore(f"sqlite:///{tmp_path / 'jobs.db'}")


async def make_client(tmp_path: Path, store: SqlJobStore, ready: bool = True) -> httpx.AsyncClient:
    settings = Settings(data_dir=tmp_path, public_url="https://gpu.example.com")
    app = create_app(settings, store=store, readiness=lambda _endpoint: None if ready else "no worker: start one")
    headers = {"Authorization": f"Key {make_api_key(store)}"}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", headers=headers)


@pytest.fixture
async def client(tmp_path: Path, store: SqlJobStore) -> AsyncIterator[httpx.AsyncClient]:
    async with await make_client(tmp_path, store) as instance:
        yield instance


async def test_submit_returns_absolute_urls_with_prefix(client: httpx.AsyncClient) -> None:
    response = await client.post("/queue/fal-ai/wan-i2v", json=wan_input())
    assert response.status_code == 200
    body = response.json()
    request_id = body["request_id"]
    assert response.headers["x-fal-request-id"] == request_id
    base = f"https://gpu.example.com/queue/fal-ai/wan-i2v/requests/{request_id}"
    assert (body["response_url"], body["status_url"], body["cancel_url"]) == (base, base + "/status", base + "/cancel")
    assert (body["status"], body["queue_position"], body["logs"], body["gateway_request_id"]) == (
        "IN_QUEUE",
        0,
        None,
        request_id,
    )


async def test_status_is_202_until_completed_then_200(client: httpx.AsyncClient, store: SqlJobStore) -> None:
    first = (await client.post("/queue/fal-ai/wan-i2v", json=wan_input())).json()["request_id"]
    second = await client.post("/queue/fal-ai/wan-i2v", json=wan_input(), headers={"X-Fal-Queue-Priority": "low"})
    second_id = second.json()["request_id"]
    queued = await client.get(f"/queue/fal-ai/wan-i2v/requests/{second_id}/status")
    assert (queued.status_code, queued.json()["queue_position"]) == (202, 1)

    claimed = store.claim_job(worker_id="w", endpoint_ids=["fal-ai/wan-i2v"], lease_s=30, now=time.time())
    assert claimed is not None and claimed.record.request_id == first
    running = await client.get(f"/queue/fal-ai/wan-i2v/requests/{first}/status", params={"logs": "true"})
    assert running.status_code == 202
    assert running.json()["status"] == "IN_PROGRESS"
    assert running.json()["logs"][0]["source"] == "USER"
    premature = await client.get(f"/queue/fal-ai/wan-i2v/requests/{first}")
    assert premature.status_code == 400

    body = {"video": {"url": "framecast-blob://outputs/x/v.mp4"}, "seed": 1}
    assert store.complete_job(first, claimed.lease_token, JobOutcome(200, body, inference_time_s=1.5), now=time.time())
    done = await client.get(f"/queue/fal-ai/wan-i2v/requests/{first}/status")
    assert done.status_code == 200
    assert done.json()["metrics"] == {"inference_time": 1.5}
    assert (done.json()["error"], done.json()["error_type"]) == (None, None)
    result = await client.get(f"/queue/fal-ai/wan-i2v/requests/{first}")
    assert result.json()["video"]["url"] == "https://gpu.example.com/files/outputs/x/v.mp4"
    assert result.headers["x-fal-request-id"] == first


async def test_subpath_is_dropped_and_other_apps_do_not_see_the_request(client: httpx.AsyncClient) -> None:
    request_id = (await client.post("/queue/fal-ai/wan-i2v", json=wan_input())).json()["request_id"]
    assert (await client.get(f"/queue/fal-ai/other/requests/{request_id}/status")).status_code == 404


async def test_submit_refused_when_no_worker_can_run_it(tmp_path: Path, store: SqlJobStore) -> None:
    async with await make_client(tmp_path, store, ready=False) as client:
        response = await client.post("/queue/fal-ai/wan-i2v", json=wan_input())
    assert response.status_code == 503
    assert response.json() == {"detail": "no worker: start one", "error_type": "runner_scheduling_failure"}


async def test_invalid_input_names_every_field_and_queues_nothing(
    client: httpx.AsyncClient, store: SqlJobStore, tmp_path: Path
) -> None:
    response = await client.post("/queue/fal-ai/wan-i2v", json={"num_frames": 5, "resolution": "4k"})
    assert response.status_code == 422
    fields = sorted(tuple(entry["loc"]) for entry in response.json()["detail"])
    assert fields == [("body", "image_url"), ("body", "num_frames"), ("body", "prompt"), ("body", "resolution")]
    big = await client.post("/queue/fal-ai/wan-i2v", json=wan_input(image_url=png_uri(5000, 5000)))
    assert big.status_code == 422
    assert big.json()["detail"][0]["loc"] == ["body", "image_url"]
    assert big.json()["detail"][0]["type"] == "image_too_large"
    # Nothing half-done: no input file was kept for the refused requests.
    assert not any((tmp_path / "files").rglob("*.png"))


async def test_bad_headers_are_400(client: httpx.AsyncClient) -> None:
    for headers in (
        {"X-Fal-Queue-Priority": "high"},
        {"X-Fal-Request-Timeout": "soon"},
        {"X-Fal-Request-Timeout": "-1"},
    ):
        response = await client.post("/queue/fal-ai/wan-i2v", json=wan_input(), headers=headers)
        assert response.status_code == 400, headers
        assert response.json()["error_type"] == "bad_request"


async def test_oversized_body_is_413(tmp_path: Path, store: SqlJobStore) -> None:
    settings = Settings(data_dir=tmp_path, max_body_bytes=1000, auth=False)
    app = create_app(settings, store=store, readiness=lambda _endpoint: None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.post("/queue/fal-ai/wan-i2v", json=wan_input(prompt="x" * 5000))
    assert response.status_code == 413


@pytest.mark.parametrize("hook", ["ftp://example.com/x", "/relative", "https://", "https://example.com/" + "x" * 2048])
async def test_a_webhook_that_can_never_be_delivered_is_refused_at_submit(client: httpx.AsyncClient, hook: str) -> None:
    response = await client.post("/queue/fal-ai/wan-i2v", params={"fal_webhook": hook}, json=wan_input())
    assert response.status_code == 400
    assert "fal_webhook must be an absolute http(s) URL" in response.json()["detail"]
