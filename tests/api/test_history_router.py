"""`GET /api/requests`: each key sees its own recent requests."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from framecast.app import create_app
from framecast.settings import Settings
from framecast.store.sql_jobs import SqlJobStore
from tests.api.conftest import make_api_key, png_uri

pytestmark = pytest.mark.anyio


async def test_each_key_sees_its_own_requests_newest_first(tmp_path: Path) -> None:
    store = SqlJobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    app = create_app(
        Settings(data_dir=tmp_path, public_url="https://gpu.example.com"), store=store, readiness=lambda _: None
    )
    alice, bob = make_api_key(store, "alice"), make_api_key(store, "bob")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        submitted = []
        for key, prompt in ((alice, "first"), (bob, "theirs"), (alice, "second")):
            response = await client.post(
                "/queue/fal-ai/wan-i2v",
                json={"prompt": prompt, "image_url": png_uri()},
                headers={"Authorization": f"Key {key}"},
            )
            submitted.append(response.json()["request_id"])
        history = (await client.get("/api/requests", headers={"Authorization": f"Key {alice}"})).json()["requests"]
        assert [entry["request_id"] for entry in history] == [submitted[2], submitted[0]]
        newest = history[0]
        assert (newest["endpoint_id"], newest["status"], newest["input"]["prompt"]) == (
            "fal-ai/wan-i2v",
            "IN_QUEUE",
            "second",
        )
        assert (
            newest["input"]["image_url"].startswith("data:image/png;base64,")
            and "characters)" in newest["input"]["image_url"]
        )
        assert newest["status_url"] == f"https://gpu.example.com/queue/fal-ai/wan-i2v/requests/{submitted[2]}/status"
        assert newest["created_at"].endswith("Z") and newest["finished_at"] is None
        limited = (await client.get("/api/requests?limit=1", headers={"Authorization": f"Key {bob}"})).json()
        assert [entry["input"]["prompt"] for entry in limited["requests"]] == ["theirs"]
        assert (await client.get("/api/requests")).status_code == 401
