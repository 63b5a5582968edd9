"""GET /models, the OpenAPI documents, and submit validation across every endpoint (in-process)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from framecast.app import create_app
from framecast.bindings import ModelBinding
from framecast.endpoints import build_catalogue
from framecast.settings import Settings
from framecast.store.jobs import WorkerEndpoint, WorkerRecord
from framecast.store.sql_jobs import SqlJobStore
from tests.api.conftest import make_api_key, png_uri

pytestmark = pytest.mark.anyio
CATALOGUE = build_catalogue()


@pytest.fixture
def store(tmp_path: Path) -> SqlJobStore:
    return SqlJobStore(f"sqlite:///{tmp_path / 'jobs.db'}")


def make_pipeline_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "model_index.json").write_text("{}")
    return path


@pytest.fixture
def client_factory(tmp_path: Path, store: SqlJobStore) -> Callable[..., AsyncIterator[httpx.AsyncClient]]:
    async def factory(
        bindings: list[ModelBinding] | None = None, ready_all: bool = False
    ) -> AsyncIterator[httpx.AsyncClient]:
        settings = Settings(data_dir=tmp_path, public_url="https://gpu.example.com")
        app = create_app(
            settings,
            store=store,
            bindings=bindings or [],
            readiness=(lambda _endpoint: None) if ready_all else None,
        )
        headers = {"Authorization": f"Key {make_api_key(store)}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as client:
            yield client

    return factory


@pytest.fixture
async def ready_client(
    client_factory: Callable[..., AsyncIterator[httpx.AsyncClient]],
) -> AsyncIterator[httpx.AsyncClient]:
    async for client in client_factory(ready_all=True):
        yield client


def with_data_uris(spec_id: str) -> dict[str, Any]:
    """The documented example, with its image URLs replaced by inline images (no network in tests)."""
    spec = CATALOGUE[spec_id]
    example = dict(spec.example)
    for field in spec.image_fields:
        if field in example:
            example[field] = png_uri()
    return example


@pytest.mark.parametrize("endpoint_id", sorted(CATALOGUE))
async def test_every_documented_example_is_queued(ready_client: httpx.AsyncClient, endpoint_id: str) -> None:
    response = await ready_client.post(f"/queue/{endpoint_id}", json=with_data_uris(endpoint_id))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "IN_QUEUE"


BAD_INPUTS = [
    (
        "fal-ai/wan-i2v",
        {"image_url": "x", "num_frames": 200, "resolution": "4k"},
        {"prompt", "num_frames", "resolution"},
    ),
    ("fal-ai/framepack", {"prompt": "p" * 501, "image_url": "x", "aspect_ratio": "1:1"}, {"prompt", "aspect_ratio"}),
    ("fal-ai/framepack/flf2v", {"prompt": "p", "image_url": "x", "strength": 2}, {"end_image_url", "strength"}),
    (
        "wavespeed-ai/framepack",
        {"image": "x", "prompt": "p", "seed": -2, "num_inference_steps": 60},
        {"seed", "num_inference_steps"},
    ),
    ("fal-ai/stable-video", {"motion_bucket_id": "lots"}, {"image_url", "motion_bucket_id"}),
    (
        "fal-ai/magi-distilled/image-to-video",
        {"prompt": "p", "image_url": "x", "num_inference_steps": 12},
        {"num_inference_steps"},
    ),
    ("fal-ai/veo2/image-to-video", {"prompt": "p", "image_url": "x", "duration": "9s"}, {"duration"}),
    (
        "fal-ai/kling-video/v2.1/standard/image-to-video",
        {"prompt": "p", "image_url": "x", "cfg_scale": 1.5},
        {"cfg_scale"},
    ),
    (
        "fal-ai/kling-video/v1/standard/image-to-video",
        {"prompt": "p", "image_url": "x", "dynamic_masks": [{"trajectories": []}]},
        {"dynamic_masks.0.mask_url"},
    ),
    (
        "fal-ai/bytedance/seedance/v1/lite/image-to-video",
        {"prompt": "p", "image_url": "x", "duration": "13"},
        {"duration"},
    ),
    (
        "fal-ai/pixverse/v4.5/image-to-video",
        {"prompt": "p", "image_url": "x", "resolution": "1080p", "duration": "8"},
        {"duration"},
    ),
    (
        "fal-ai/pixverse/v4.5/transition",
        {"prompt": "p", "first_image_url": "x", "last_image_url": "y", "end_image_url": "z"},
        {"end_image_url"},
    ),
    ("fal-ai/luma-dream-machine/ray-2-flash/image-to-video", {"prompt": "p"}, {"end_image_url"}),
    ("fal-ai/minimax/hailuo-02/pro/image-to-video", {"prompt": 5}, {"prompt", "image_url"}),
]


@pytest.mark.parametrize(("endpoint_id", "body", "fields"), BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
async def test_bad_input_names_every_bad_field_and_queues_nothing(
    ready_client: httpx.AsyncClient, store: SqlJobStore, endpoint_id: str, body: dict[str, Any], fields: set[str]
) -> None:
    response = await ready_client.post(f"/queue/{endpoint_id}", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    named = {".".join(str(part) for part in entry["loc"][1:]) for entry in detail}
    assert named == fields
    assert all(entry["loc"][0] == "body" and entry["msg"] for entry in detail)
    assert not store.has_queued_job(list(CATALOGUE), now=time.time())


async def test_integers_are_accepted_where_fal_types_strings(ready_client: httpx.AsyncClient) -> None:
    magi = {"prompt": "p", "image_url": png_uri(), "num_inference_steps": 8}
    assert (await ready_client.post("/queue/fal-ai/magi-distilled/image-to-video", json=magi)).status_code == 200
    kling = {"prompt": "p", "image_url": png_uri(), "duration": 10}
    response = await ready_client.post("/queue/fal-ai/kling-video/v2.1/standard/image-to-video", json=kling)
    assert response.status_code == 200


async def test_unbound_endpoint_is_refused_with_how_to_fix_it(
    client_factory: Callable[..., AsyncIterator[httpx.AsyncClient]], store: SqlJobStore
) -> None:
    async for client in client_factory():
        response = await client.post(
            "/queue/fal-ai/veo2/image-to-video", json=with_data_uris("fal-ai/veo2/image-to-video")
        )
        assert response.status_code == 503
        assert response.json()["error_type"] == "runner_scheduling_failure"
        detail = response.json()["detail"]
        assert 'endpoints."fal-ai/veo2/image-to-video"' in detail and "closed model" in detail
        assert not store.has_queued_job(list(CATALOGUE), now=time.time())


async def test_missing_weights_say_which_pull_to_run(
    client_factory: Callable[..., AsyncIterator[httpx.AsyncClient]], tmp_path: Path
) -> None:
    hub = ModelBinding("fal-ai/wan-i2v", "diffusers-wan-i2v", "Example-Org/never-downloaded")
    async for client in client_factory([hub]):
        response = await client.post("/queue/fal-ai/wan-i2v", json={"prompt": "p", "image_url": png_uri()})
        assert response.status_code == 503
        assert "framecast pull fal-ai/wan-i2v" in response.json()["detail"]
        models = (await client.get("/models")).json()
        wan = next(entry for entry in models["endpoints"] if entry["endpoint_id"] == "fal-ai/wan-i2v")
        assert (wan["state"], wan["engine"], wan["model"], wan["accepting"]) == (
            "weights_missing",
            "diffusers-wan-i2v",
            "Example-Org/never-downloaded",
            False,
        )


async def test_models_follow_the_workers(
    client_factory: Callable[..., AsyncIterator[httpx.AsyncClient]], store: SqlJobStore, tmp_path: Path
) -> None:
    weights = str(make_pipeline_dir(tmp_path / "wan"))
    binding = ModelBinding("fal-ai/wan-i2v", "diffusers-wan-i2v", weights, device="cpu")

    def report(state: str, endpoint_state: str, error: str | None = None) -> None:
        store.upsert_worker(
            WorkerRecord(
                worker_id="host:1:abc",
                endpoint_ids=("fal-ai/wan-i2v",) if endpoint_state in ("ready", "loading") else (),
                state=state,
                error=error,
                heartbeat_at=time.time(),
                started_at=time.time(),
                endpoints={
                    "fal-ai/wan-i2v": WorkerEndpoint("diffusers-wan-i2v", weights, "cpu", endpoint_state, error)
                },
            )
        )

    async def wan_state(client: httpx.AsyncClient) -> dict[str, Any]:
        body = (await client.get("/models")).json()
        return next(entry for entry in body["endpoints"] if entry["endpoint_id"] == "fal-ai/wan-i2v")

    async for client in client_factory([binding]):
        assert (await wan_state(client))["state"] == "no_worker"
        report("loading", "loading")
        assert (await wan_state(client))["state"] == "loading"
        report("ready", "ready")
        entry = await wan_state(client)
        assert (entry["state"], entry["workers_ready"], entry["reason"]) == ("ready", 1, None)
        report("error", "engine_error", "RuntimeError: CUDA out of memory")
        entry = await wan_state(client)
        assert entry["state"] == "engine_error" and "CUDA out of memory" in entry["reason"]
        response = await client.post("/queue/fal-ai/wan-i2v", json={"prompt": "p", "image_url": png_uri()})
        assert response.status_code == 503 and "CUDA out of memory" in response.json()["detail"]


async def test_models_lists_every_endpoint_with_its_document(ready_client: httpx.AsyncClient) -> None:
    body = (await ready_client.get("/models")).json()
    assert [entry["endpoint_id"] for entry in body["endpoints"]] == list(CATALOGUE)
    closed = {entry["endpoint_id"] for entry in body["endpoints"] if entry["kind"] == "closed"}
    assert "fal-ai/veo2/image-to-video" in closed and "fal-ai/wan-i2v" not in closed
    for entry in body["endpoints"]:
        assert entry["openapi_url"].startswith("https://gpu.example.com/api/openapi/queue/openapi.json?endpoint_id=")


async def test_per_endpoint_openapi_document(ready_client: httpx.AsyncClient) -> None:
    endpoint_id = "fal-ai/kling-video/v2.1/standard/image-to-video"
    response = await ready_client.get("/api/openapi/queue/openapi.json", params={"endpoint_id": endpoint_id})
    assert response.status_code == 200
    document = response.json()
    assert document["servers"] == [{"url": "https://gpu.example.com/queue"}]
    assert document["info"]["x-fal-metadata"]["endpointId"] == endpoint_id
    assert set(document["paths"]) == {
        f"/{endpoint_id}",
        f"/{endpoint_id}/requests/{{request_id}}",
        f"/{endpoint_id}/requests/{{request_id}}/status",
        f"/{endpoint_id}/requests/{{request_id}}/cancel",
    }
    schemas = document["components"]["schemas"]
    input_schema = schemas["KlingVideoV21StandardImageToVideoInput"]
    assert input_schema["examples"] == [CATALOGUE[endpoint_id].example]
    assert input_schema["properties"]["duration"]["enum"] == ["5", "10"]
    assert "File" in schemas and "QueueStatus" in schemas
    missing = await ready_client.get("/api/openapi/queue/openapi.json", params={"endpoint_id": "fal-ai/nope"})
    assert missing.status_code == 404


async def test_paths_in_the_per_endpoint_document_are_served(ready_client: httpx.AsyncClient) -> None:
    """fal's document addresses requests by the full endpoint id; the clients use owner/alias. Both work."""
    endpoint_id = "fal-ai/kling-video/v2.1/standard/image-to-video"
    submitted = await ready_client.post(f"/queue/{endpoint_id}", json=with_data_uris(endpoint_id))
    request_id = submitted.json()["request_id"]
    for app in (endpoint_id, "fal-ai/kling-video"):
        status = await ready_client.get(f"/queue/{app}/requests/{request_id}/status")
        assert status.status_code == 202
    other = await ready_client.get(f"/queue/fal-ai/wan-i2v/requests/{request_id}/status")
    assert other.status_code == 404


async def test_server_openapi_documents_every_endpoint(ready_client: httpx.AsyncClient) -> None:
    document = (await ready_client.get("/openapi.json")).json()
    for endpoint_id in CATALOGUE:
        submit = document["paths"][f"/queue/{endpoint_id}"]["post"]
        reference = submit["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert reference.rsplit("/", 1)[1] in document["components"]["schemas"]
        assert f"/run/{endpoint_id}" in document["paths"]
    assert "/queue/{endpoint_id}" not in document["paths"], "the catch-all stays out of the document"
    assert "/models" in document["paths"]
