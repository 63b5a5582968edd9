"""`GET /metrics` in-process: the exposition, parsed with prometheus_client's own parsers, follows the jobs and
workers in the database."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from framecast.app import create_app
from framecast.settings import Settings
from framecast.store.jobs import DeviceMemory, JobOutcome, WorkerRecord, WorkerResources, error_outcome
from framecast.store.sql_jobs import SqlJobStore
from tests.api.conftest import make_api_key, png_uri

pytestmark = pytest.mark.anyio

WAN = "fal-ai/wan-i2v"
GIB = 1024**3
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def store(tmp_path: Path) -> SqlJobStore:
    return SqlJobStore(f"sqlite:///{tmp_path / 'jobs.db'}")


def make_client(tmp_path: Path, store: SqlJobStore, key_name: str = "tests", **settings: Any) -> httpx.AsyncClient:
    app = create_app(
        Settings(data_dir=tmp_path, public_url="https://gpu.example.com", **settings),
        store=store,
        readiness=lambda _endpoint: None,
    )
    headers = {"Authorization": f"Key {make_api_key(store, key_name)}"}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", headers=headers)


@pytest.fixture
async def client(tmp_path: Path, store: SqlJobStore) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(tmp_path, store) as instance:
        yield instance


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def submit(client: httpx.AsyncClient, **params: str) -> str:
    response = await client.post(f"/queue/{WAN}", json={"prompt": "p", "image_url": png_uri()}, params=params)
    assert response.status_code == 200, response.text
    request_id: str = response.json()["request_id"]
    return request_id


async def test_metrics_need_a_key_unless_public(tmp_path: Path, store: SqlJobStore) -> None:
    async with make_client(tmp_path, store) as client:
        assert (await client.get("/metrics", headers={"Authorization": ""})).status_code == 401
        assert (await client.get("/metrics", headers={"Authorization": "Bearer nope"})).status_code == 401
        key = client.headers["Authorization"].removeprefix("Key ")
        # Prometheus's `authorization: {credentials: KEY}` sends a Bearer header.
        assert (await client.get("/metrics", headers={"Authorization": f"Bearer {key}"})).status_code == 200
    async with make_client(tmp_path / "public", store, "public", metrics_public=True) as client:
        assert (await client.get("/metrics", headers={"Authorization": ""})).status_code == 200


async def test_bound_endpoints_have_series_before_their_first_job(client: httpx.AsyncClient) -> None:
    samples = await scrape(client)
    assert value(samples, "framecast_queue_depth", endpoint=WAN) == 0
    assert value(samples, "framecast_jobs_running", endpoint=WAN) == 0
    assert value(samples, "framecast_queue_oldest_age_seconds", endpoint=WAN) == 0
    assert value(samples, "framecast_jobs_finished_total", endpoint=WAN, outcome="ok") == 0
    assert value(samples, "framecast_job_run_seconds_count", endpoint=WAN) == 0
    assert value(samples, "framecast_workers", state="ready") == 0
    assert value(samples, "framecast_cluster_statistics_up") == 1


async def test_queue_depth_follows_submits_and_claims(client: httpx.AsyncClient, store: SqlJobStore) -> None:
    await submit(client)
    await submit(client)
    samples = await scrape(client)
    assert value(samples, "framecast_queue_depth", endpoint=WAN) == 2
    assert value(samples, "framecast_jobs_running", endpoint=WAN) == 0
    oldest = value(samples, "framecast_queue_oldest_age_seconds", endpoint=WAN)
    assert oldest is not None and oldest >= 0

    assert store.claim_job(worker_id="w", endpoint_ids=[WAN], lease_s=30, now=time.time()) is not None
    samples = await scrape(client)
    assert value(samples, "framecast_queue_depth", endpoint=WAN) == 1
    assert value(samples, "framecast_jobs_running", endpoint=WAN) == 1


async def test_finished_jobs_show_in_counters_and_histograms(client: httpx.AsyncClient, store: SqlJobStore) -> None:
    first, second = await submit(client), await submit(client)
    record = store.get_job(first)
    assert record is not None
    claimed = store.claim_job(worker_id="w", endpoint_ids=[WAN], lease_s=30, now=record.created_at + 3)
    assert claimed is not None and claimed.record.request_id == first
    outcome = JobOutcome(200, {"video": {}}, inference_time_s=40.0)
    assert store.complete_job(first, claimed.lease_token, outcome, now=record.created_at + 48)
    claimed = store.claim_job(worker_id="w", endpoint_ids=[WAN], lease_s=30, now=time.time())
    assert claimed is not None and claimed.record.request_id == second
    failure = error_outcome(500, "The model process exited with code 3", "runner_server_error")
    assert store.complete_job(second, claimed.lease_token, failure, now=time.time())

    samples = await scrape(client)
    assert value(samples, "framecast_jobs_finished_total", endpoint=WAN, outcome="ok") == 1
    assert value(samples, "framecast_jobs_finished_total", endpoint=WAN, outcome="server_error") == 1
    assert value(samples, "framecast_jobs_finished_total", endpoint=WAN, outcome="cancelled") == 0
    assert value(samples, "framecast_job_failures_total", endpoint=WAN, error_type="runner_server_error") == 1
    assert value(samples, "framecast_job_run_seconds_count", endpoint=WAN) == 2
    # The first job ran 45 s: in the 60 s bucket, not the 30 s one.
    assert value(samples, "framecast_job_run_seconds_bucket", endpoint=WAN, le="30.0") == 1
    assert value(samples, "framecast_job_run_seconds_bucket", endpoint=WAN, le="60.0") == 2
    assert value(samples, "framecast_job_run_seconds_bucket", endpoint=WAN, le="+Inf") == 2
    run_sum = value(samples, "framecast_job_run_seconds_sum", endpoint=WAN)
    assert run_sum is not None and run_sum >= 45
    assert value(samples, "framecast_job_queue_seconds_count", endpoint=WAN) == 2
    assert value(samples, "framecast_job_queue_seconds_bucket", endpoint=WAN, le="2.5") == 1
    assert value(samples, "framecast_job_queue_seconds_bucket", endpoint=WAN, le="5.0") == 2
    assert value(samples, "framecast_queue_depth", endpoint=WAN) == 0


async def test_worker_heartbeats_and_gpu_memory(client: httpx.AsyncClient, store: SqlJobStore) -> None:
    now = time.time()
    memory = DeviceMemory(device="cuda:0", allocated_bytes=30 * GIB, reserved_bytes=34 * GIB, total_bytes=80 * GIB)
    store.upsert_worker(
        WorkerRecord(
            worker_id="gpu1:100:aaaaaa",
            endpoint_ids=(WAN,),
            state="ready",
            error=None,
            heartbeat_at=now - 1,
            started_at=now - 60,
            resources=WorkerResources(devices=(memory,)),
        )
    )
    store.upsert_worker(WorkerRecord("gpu2:200:bbbbbb", (), "loading", None, heartbeat_at=now - 1, started_at=now - 2))
    # Silent for ten minutes: late, and its memory is gone with it.
    store.upsert_worker(
        WorkerRecord(
            "gpu3:300:cccccc", (WAN,), "ready", None, heartbeat_at=now - 600, started_at=now - 900,
            resources=WorkerResources(devices=(memory,)),
        )
    )  # fmt: skip
    # Silent for two hours: no longer shown.
    store.upsert_worker(WorkerRecord("gpu4:400:dddddd", (WAN,), "ready", None, now - 7200, now - 9000))

    samples = await scrape(client)
    assert value(samples, "framecast_workers", state="ready") == 1
    assert value(samples, "framecast_workers", state="loading") == 1
    assert value(samples, "framecast_workers", state="error") == 0
    assert value(samples, "framecast_worker_up", worker="gpu1:100:aaaaaa", state="ready") == 1
    assert value(samples, "framecast_worker_up", worker="gpu3:300:cccccc", state="ready") == 0
    assert not any(labels and ("worker", "gpu4:400:dddddd") in labels for _name, labels in samples)
    fresh = value(samples, "framecast_worker_heartbeat_age_seconds", worker="gpu1:100:aaaaaa")
    late = value(samples, "framecast_worker_heartbeat_age_seconds", worker="gpu3:300:cccccc")
    assert fresh is not None and 1 <= fresh < 60
    assert late is not None and late >= 600
    labels = {"worker": "gpu1:100:aaaaaa", "device": "cuda:0"}
    assert value(samples, "framecast_gpu_memory_allocated_bytes", **labels) == 30 * GIB
    assert value(samples, "framecast_gpu_memory_reserved_bytes", **labels) == 34 * GIB
    assert value(samples, "framecast_gpu_memory_total_bytes", **labels) == 80 * GIB
    gpu_workers = {dict(labels)["worker"] for name, labels in samples if name.startswith("framecast_gpu_memory")}
    assert gpu_workers == {"gpu1:100:aaaaaa"}, "CPU workers and late workers report no GPU memory"


async def test_http_requests_are_counted_by_route_template(client: httpx.AsyncClient) -> None:
    request_id = await submit(client, fal_webhook="https://hooks.example.com/hook?token=s3cr3t-webhook-token")
    assert (await client.get(f"/queue/{WAN}/requests/{request_id}/status")).status_code == 202
    assert (await client.get("/no/such/route")).status_code == 404
    response = await client.get("/metrics")
    samples = await scrape(client)
    status_route = "/queue/{app:path}/requests/{request_id}/status"
    assert value(samples, "framecast_http_requests_total", method="GET", route=status_route, status_code="202") == 1
    assert value(samples, "framecast_http_requests_total", method="POST", route="/queue/{endpoint_id:path}",
                 status_code="200") == 1  # fmt: skip
    assert value(samples, "framecast_http_requests_total", method="GET", route="unmatched", status_code="404") == 1
    assert value(samples, "framecast_http_request_duration_seconds_count", method="GET", route=status_route) == 1
    # Labels never carry ids, keys, payloads or webhook URLs.
    key = client.headers["Authorization"].removeprefix("Key ")
    for secret in (request_id, key, "s3cr3t-webhook-token", "hooks.example.com", "base64"):
        assert secret not in response.text


async def test_openmetrics_when_asked_for(client: httpx.AsyncClient) -> None:
    await submit(client)
    response = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    families = {family.name: family for family in parse_openmetrics(response.text)}
    assert families["framecast_jobs_finished"].type == "counter"
    depth = [sample for sample in families["framecast_queue_depth"].samples if sample.labels == {"endpoint": WAN}]
    assert [sample.value for sample in depth] == [1]
