"""WaveSpeed's v3 API in-process (httpx ASGITransport), with a store but no workers: the test plays the worker."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI

from framecast.api.state import AppState
from framecast.api.wavespeed_router import wavespeed_webhook_payload
from framecast.app import create_app
from framecast.service.webhooks import WAVESPEED_FORMAT, WAVESPEED_SECRET_NAME
from framecast.settings import Settings
from framecast.store.jobs import ClaimedJob, JobOutcome, JobRecord, error_outcome
from framecast.store.sql_jobs import SqlJobStore
from tests.api.conftest import make_api_key, png_uri

pytestmark = pytest.mark.anyio

BASE = "https://gpu.example.com"
MODEL = "wavespeed-ai/framepack"
ISO_MILLISECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
OUTPUT_BODY = {
    "video": {"url": "framecast-blob://outputs/abc/v.mp4", "content_type": "video/mp4"},
    "seed": 7,
    "metadata": {"engine": "diffusers-framepack", "model": "tiny/framepack", "seed": 7, "render_scale": 1.0},
}


def framepack_input(**overrides: Any) -> dict[str, Any]:
    return {"image": png_uri(), "prompt": "a cat", "num_frames": 30, "num_inference_steps": 4, **overrides}


@pytest.fixture
def store(tmp_path: Path) -> SqlJobStore:
    return SqlJobStore(f"sqlite:///{tmp_path / 'jobs.db'}")


def make_app(tmp_path: Path, store: SqlJobStore, *, ready: bool = True, **settings: Any) -> FastAPI:
    options: dict[str, Any] = {"data_dir": tmp_path, "public_url": BASE, "auth": False, "poll_interval_s": 0.01}
    return create_app(
        Settings(**{**options, **settings}),
        store=store,
        readiness=lambda _endpoint: None if ready else "no worker: start one with framecast serve --workers 1",
    )


def client_for(app: FastAPI, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", headers=headers)


@pytest.fixture
def app(tmp_path: Path, store: SqlJobStore) -> FastAPI:
    return make_app(tmp_path, store)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as instance:
        yield instance


def local(url: str) -> str:
    """The path of one of our absolute URLs, for the in-process client."""
    assert url.startswith(BASE), url
    return url[len(BASE) :]


async def claim(store: SqlJobStore, endpoint_id: str = MODEL, *, timeout_s: float = 10.0) -> ClaimedJob:
    """Claim the next job as a worker would, once one is queued."""
    with anyio.fail_after(timeout_s):
        while True:
            claimed = store.claim_job(worker_id="w", endpoint_ids=[endpoint_id], lease_s=30, now=time.time())
            if claimed is not None:
                return claimed
            await anyio.sleep(0.01)


def finish(store: SqlJobStore, claimed: ClaimedJob, outcome: JobOutcome) -> None:
    assert store.complete_job(claimed.record.request_id, claimed.lease_token, outcome, now=time.time())


def record_of(store: SqlJobStore, request_id: str) -> JobRecord:
    record = store.get_job(request_id)
    assert record is not None
    return record


async def submit(client: httpx.AsyncClient, body: dict[str, Any] | None = None, **params: str) -> dict[str, Any]:
    response = await client.post(f"/api/v3/{MODEL}", json=body or framepack_input(), params=params)
    assert response.status_code == 200, response.text
    envelope: dict[str, Any] = response.json()
    assert (envelope["code"], envelope["message"]) == (200, "success")
    data: dict[str, Any] = envelope["data"]
    return data


async def test_submit_answers_a_created_task_in_the_envelope(client: httpx.AsyncClient) -> None:
    task = await submit(client)
    assert set(task) == {
        "id", "model", "outputs", "urls", "has_nsfw_contents", "status", "created_at", "error", "timings",
    }  # fmt: skip
    assert (task["model"], task["status"], task["outputs"], task["has_nsfw_contents"]) == (MODEL, "created", [], [])
    assert (task["error"], task["timings"]) == ("", {"inference": 0})
    assert task["urls"] == {"get": f"{BASE}/api/v3/predictions/{task['id']}/result"}
    assert ISO_MILLISECONDS.match(task["created_at"]), task["created_at"]


async def test_result_follows_the_task_to_completed_with_absolute_outputs_and_metadata(
    client: httpx.AsyncClient, store: SqlJobStore
) -> None:
    task_id = (await submit(client))["id"]
    claimed = await claim(store)
    running = (await client.get(f"/api/v3/predictions/{task_id}/result")).json()["data"]
    assert running["status"] == "processing"

    finish(store, claimed, JobOutcome(200, OUTPUT_BODY, inference_time_s=1.2346))
    for path in (f"/api/v3/predictions/{task_id}/result", f"/api/v3/predictions/{task_id}"):
        response = await client.get(path)
        assert response.status_code == 200
        done = response.json()["data"]
        assert done["status"] == "completed"
        assert done["outputs"] == [f"{BASE}/files/outputs/abc/v.mp4"]
        assert done["has_nsfw_contents"] == [False]
        assert (done["error"], done["timings"]) == ("", {"inference": 1235})
        # Honesty: the engine that produced the video is never hidden.
        assert done["metadata"] == OUTPUT_BODY["metadata"]


async def test_a_failed_task_is_http_200_with_status_failed_and_the_error(
    client: httpx.AsyncClient, store: SqlJobStore
) -> None:
    task_id = (await submit(client))["id"]
    finish(store, await claim(store), error_outcome(500, "Injected test fault at step 1", "internal_server_error"))
    response = await client.get(f"/api/v3/predictions/{task_id}/result")
    assert response.status_code == 200
    failed = response.json()["data"]
    assert (failed["status"], failed["error"], failed["outputs"]) == ("failed", "Injected test fault at step 1", [])
    assert "metadata" not in failed


async def test_a_cancelled_task_is_failed(client: httpx.AsyncClient) -> None:
    task_id = (await submit(client))["id"]
    # WaveSpeed's API has no cancel; fal's cancel route takes the same id.
    cancel = await client.put(f"/queue/{MODEL}/requests/{task_id}/cancel")
    assert cancel.status_code == 202
    failed = (await client.get(f"/api/v3/predictions/{task_id}")).json()["data"]
    assert (failed["status"], failed["error"]) == ("failed", "Request was cancelled by the client")


async def test_unknown_task_is_a_404_envelope(client: httpx.AsyncClient) -> None:
    for path in ("/api/v3/predictions/nope/result", "/api/v3/predictions/nope"):
        response = await client.get(path)
        assert response.status_code == 404
        assert response.json() == {"code": 404, "message": "Task not found", "data": None}


async def test_sync_mode_waits_for_the_finished_task_and_is_not_a_model_param(
    client: httpx.AsyncClient, store: SqlJobStore
) -> None:
    pending = asyncio.ensure_future(client.post(f"/api/v3/{MODEL}", json=framepack_input(enable_sync_mode=True)))
    claimed = await claim(store)
    assert not pending.done()
    assert "enable_sync_mode" not in json.dumps(claimed.record.payload)
    finish(store, claimed, JobOutcome(200, OUTPUT_BODY, inference_time_s=0.5))
    response = await pending
    assert response.status_code == 200
    task = response.json()["data"]
    assert (task["id"], task["status"]) == (claimed.record.request_id, "completed")
    assert task["outputs"] == [f"{BASE}/files/outputs/abc/v.mp4"]


async def test_sync_mode_answers_a_failed_task_with_http_200(client: httpx.AsyncClient, store: SqlJobStore) -> None:
    pending = asyncio.ensure_future(client.post(f"/api/v3/{MODEL}", json=framepack_input(enable_sync_mode=True)))
    finish(store, await claim(store), error_outcome(500, "engine exploded", "internal_server_error"))
    response = await pending
    assert response.status_code == 200
    assert (response.json()["data"]["status"], response.json()["data"]["error"]) == ("failed", "engine exploded")


async def test_sync_mode_false_returns_at_once(client: httpx.AsyncClient) -> None:
    assert (await submit(client, framepack_input(enable_sync_mode=False)))["status"] == "created"


async def test_invalid_input_is_400_naming_every_bad_field_and_queues_nothing(
    client: httpx.AsyncClient, store: SqlJobStore
) -> None:
    response = await client.post(f"/api/v3/{MODEL}", json={"num_frames": 5, "resolution": "4k"})
    assert response.status_code == 400
    body = response.json()
    assert (body["code"], body["data"]) == (400, None)
    for field in ("image", "prompt", "num_frames", "resolution"):
        assert f"{field}:" in body["message"], body["message"]
    assert store.claim_job(worker_id="w", endpoint_ids=[MODEL], lease_s=30, now=time.time()) is None

    for bad in (b"{not json", b"[1, 2]"):
        response = await client.post(f"/api/v3/{MODEL}", content=bad, headers={"Content-Type": "application/json"})
        assert (response.status_code, response.json()["code"]) == (400, 400)
    bad_flag = await client.post(f"/api/v3/{MODEL}", json=framepack_input(enable_sync_mode="yes please"))
    assert bad_flag.status_code == 400
    assert "enable_sync_mode" in bad_flag.json()["message"]


async def test_unknown_model_is_404_and_no_worker_is_503(tmp_path: Path, store: SqlJobStore) -> None:
    async with client_for(make_app(tmp_path, store)) as client:
        response = await client.post("/api/v3/wavespeed-ai/nothing-here", json=framepack_input())
    assert response.status_code == 404
    assert response.json() == {
        "code": 404,
        "message": "Model 'wavespeed-ai/nothing-here' is not served here",
        "data": None,
    }

    async with client_for(make_app(tmp_path, store, ready=False)) as client:
        response = await client.post(f"/api/v3/{MODEL}", json=framepack_input())
    assert response.status_code == 503
    assert response.json() == {
        "code": 503,
        "message": "no worker: start one with framecast serve --workers 1",
        "data": None,
    }


async def test_every_catalogue_endpoint_is_served(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v3/fal-ai/wan-i2v", json={"prompt": "p", "image_url": png_uri()})
    assert response.status_code == 200
    assert response.json()["data"]["model"] == "fal-ai/wan-i2v"


async def test_webhook_query_registers_a_wavespeed_webhook(client: httpx.AsyncClient, store: SqlJobStore) -> None:
    task_id = (await submit(client, webhook="https://hooks.example.com/ws?x=1"))["id"]
    record = record_of(store, task_id)
    assert (record.webhook_url, record.webhook_format) == ("https://hooks.example.com/ws?x=1", WAVESPEED_FORMAT)

    response = await client.post(f"/api/v3/{MODEL}", json=framepack_input(), params={"webhook": "ftp://x/y"})
    assert response.status_code == 400
    assert "webhook" in response.json()["message"]


async def test_webhook_payload_is_the_bare_task_plus_input(app: FastAPI, store: SqlJobStore) -> None:
    async with client_for(app) as client:
        task_id = (await submit(client, framepack_input(seed=5), webhook="https://hooks.example.com/ws"))["id"]
    finish(store, await claim(store), JobOutcome(200, OUTPUT_BODY, inference_time_s=2.0))
    state: AppState = app.state.framecast
    record = record_of(store, task_id)
    # What the sender POSTs, through the app's own wiring.
    body = json.loads(state.webhooks.encode(record, WAVESPEED_FORMAT))
    assert "code" not in body and "data" not in body
    assert (body["id"], body["status"], body["outputs"]) == (task_id, "completed", [f"{BASE}/files/outputs/abc/v.mp4"])
    assert body["input"]["prompt"] == "a cat" and body["input"]["seed"] == 5
    assert body["metadata"]["engine"] == "diffusers-framepack"
    direct = wavespeed_webhook_payload(record, BASE, lambda value: state.queue.render(value, base_url=BASE))
    assert direct == body


async def test_binary_upload_stores_the_file(client: httpx.AsyncClient) -> None:
    content = base64.b64decode(png_uri().split(",", 1)[1])
    response = await client.post("/api/v3/media/upload/binary", files={"file": ("cat.png", content, "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["code"], body["message"]) == (200, "success")
    data = body["data"]
    assert (data["type"], data["size"], data["filename"]) == ("image", len(content), "cat.png")
    assert data["download_url"].startswith(f"{BASE}/files/uploads/")
    assert (await client.get(local(data["download_url"]))).content == content

    # The download URL is a valid input on this server.
    assert (await submit(client, framepack_input(image=data["download_url"])))["status"] == "created"

    missing = await client.post("/api/v3/media/upload/binary", files={"other": ("a.png", content, "image/png")})
    assert (missing.status_code, missing.json()["code"]) == (400, 400)


async def test_binary_upload_over_the_limit_is_413(tmp_path: Path, store: SqlJobStore) -> None:
    async with client_for(make_app(tmp_path, store, max_upload_bytes=100)) as client:
        response = await client.post("/api/v3/media/upload/binary", files={"file": ("a.mp4", b"x" * 101, "video/mp4")})
    assert response.status_code == 413
    assert (response.json()["code"], response.json()["data"]) == (413, None)


async def test_upload_ticket_then_put(client: httpx.AsyncClient) -> None:
    content = base64.b64decode(png_uri().split(",", 1)[1])
    response = await client.post(
        "/api/v3/media/uploads", json={"filename": "cat.png", "size": len(content), "content_type": "image/png"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["code"], body["message"]) == (200, "success")
    upload = body["data"]["upload"]
    assert (upload["method"], upload["headers"]) == ("PUT", {"Content-Type": "image/png"})
    put = await client.put(local(upload["url"]), content=content, headers=upload["headers"])
    assert put.status_code == 200, put.text
    assert (await client.get(local(body["data"]["download_url"]))).content == content


async def test_upload_ticket_guesses_the_type_from_the_name(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v3/media/uploads", json={"filename": "clip.mp4", "size": 10})
    assert response.json()["data"]["upload"]["headers"] == {"Content-Type": "video/mp4"}


async def test_upload_ticket_refuses_a_declared_size_over_the_limit(tmp_path: Path, store: SqlJobStore) -> None:
    async with client_for(make_app(tmp_path, store, max_upload_bytes=100)) as client:
        response = await client.post("/api/v3/media/uploads", json={"filename": "a.png", "size": 101})
        assert response.status_code == 413
        assert (response.json()["code"], response.json()["data"]) == (413, None)
        bad = await client.post("/api/v3/media/uploads", json={"filename": "a.png", "size": -1})
        assert (bad.status_code, bad.json()["code"]) == (400, 400)
        assert "size" in bad.json()["message"]


async def test_webhook_secret_is_stable_and_prefixed(app: FastAPI, client: httpx.AsyncClient) -> None:
    first = await client.get("/api/v3/webhook/secret")
    second = await client.get("/api/v3/webhook/secret")
    assert first.status_code == 200
    assert first.json() == second.json()
    assert (first.json()["code"], first.json()["message"]) == (200, "success")
    secret = first.json()["data"]["secret"]
    state: AppState = app.state.framecast
    assert secret == "whsec_" + state.credentials.secret(WAVESPEED_SECRET_NAME, now=time.time())


async def test_a_missing_or_wrong_key_is_401_in_the_envelope(tmp_path: Path, store: SqlJobStore) -> None:
    app = make_app(tmp_path, store, auth=True)
    async with client_for(app) as client:
        for path in ("/api/v3/predictions/x/result", "/api/v3/webhook/secret"):
            response = await client.get(path)
            assert response.status_code == 401
            assert (response.json()["code"], response.json()["data"]) == (401, None)
        wrong = await client.get("/api/v3/webhook/secret", headers={"Authorization": "Bearer nope"})
        assert (wrong.status_code, wrong.json()["code"]) == (401, 401)
    # The SDK sends `Authorization: Bearer <key>`.
    async with client_for(app, {"Authorization": f"Bearer {make_api_key(store)}"}) as client:
        assert (await client.get("/api/v3/webhook/secret")).status_code == 200
