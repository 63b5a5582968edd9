"""Uploads through fal's storage protocol and the plain upload endpoint, in-process."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from framecast.api.state import AppState
from framecast.app import create_app
from framecast.settings import Settings
from framecast.store.sql_jobs import SqlJobStore
from tests.api.conftest import make_api_key, png_bytes

pytestmark = pytest.mark.anyio


@pytest.fixture
def store(tmp_path: Path) -> SqlJobStore:
    return SqlJobStore(f"sqlite:///{tmp_path / 'jobs.db'}")


@pytest.fixture
def app(tmp_path: Path, store: SqlJobStore) -> FastAPI:
    settings = Settings(data_dir=tmp_path, public_url="https://gpu.example.com", max_upload_bytes=4000)
    return create_app(settings, store=store, readiness=lambda _endpoint: None)


@pytest.fixture
async def client(app: FastAPI, store: SqlJobStore) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Key {make_api_key(store)}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as instance:
        yield instance


def state(app: FastAPI) -> AppState:
    value: AppState = app.state.framecast
    return value


async def initiate(client: httpx.AsyncClient, content_type: str = "image/png") -> dict[str, str]:
    response = await client.post(
        "/storage/upload/initiate?storage_type=fal-cdn-v3",
        json={"content_type": content_type, "file_name": "../../my cat.PNG"},
    )
    assert response.status_code == 200, response.text
    body: dict[str, str] = response.json()
    return body


async def test_an_initiated_upload_is_put_without_a_key_and_usable_as_input(client: httpx.AsyncClient) -> None:
    ticket = await initiate(client)
    assert ticket["upload_url"].startswith("https://gpu.example.com/storage/upload/")
    assert ticket["file_url"].startswith("https://gpu.example.com/files/uploads/")
    assert ticket["file_url"].endswith("/my_cat.png"), "the extension comes from the content type"
    put_path = ticket["upload_url"].removeprefix("https://gpu.example.com")
    put = await client.put(put_path, content=png_bytes(), headers={"Authorization": "", "Content-Type": "image/png"})
    assert put.status_code == 200, put.text
    assert put.json()["file_url"] == ticket["file_url"]

    files_path = ticket["file_url"].removeprefix("https://gpu.example.com")
    served = await client.get(files_path)
    assert served.content == png_bytes() and served.headers["content-type"] == "image/png"
    assert served.headers["x-content-type-options"] == "nosniff"

    submitted = await client.post("/queue/fal-ai/wan-i2v", json={"prompt": "p", "image_url": ticket["file_url"]})
    assert submitted.status_code == 200, submitted.text


async def test_expired_uploads_are_swept_and_refused_as_input(app: FastAPI, client: httpx.AsyncClient) -> None:
    ticket = await initiate(client)
    await client.put(ticket["upload_url"].removeprefix("https://gpu.example.com"), content=png_bytes())
    assert state(app).uploads.sweep(now=time.time() + 3600) == [], "kept for upload_ttl_s"
    (swept,) = state(app).uploads.sweep(now=time.time() + 7 * 24 * 3600 + 1)
    assert ticket["file_url"].endswith(swept)
    assert (await client.get(ticket["file_url"].removeprefix("https://gpu.example.com"))).status_code == 404
    response = await client.post("/queue/fal-ai/wan-i2v", json={"prompt": "p", "image_url": ticket["file_url"]})
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "image_url"] and "no such file on this server" in error["msg"]


async def test_a_forged_or_oversized_put_keeps_nothing(app: FastAPI, client: httpx.AsyncClient, tmp_path: Path) -> None:
    ticket = await initiate(client)
    path = ticket["upload_url"].removeprefix("https://gpu.example.com")
    forged = await client.put(path[:-3] + "abc", content=png_bytes())
    assert forged.status_code == 403 and "not valid" in forged.json()["detail"]
    too_big = await client.put(path, content=b"x" * 4001)
    assert too_big.status_code == 413 and too_big.json()["error_type"] == "file_too_large"
    assert list((tmp_path / "tmp").iterdir()) == []
    assert not (tmp_path / "files" / "uploads").exists()
    assert state(app).uploads.sweep(now=time.time() + 10**9) == [], "nothing in the ledger either"


async def test_initiate_needs_a_key(client: httpx.AsyncClient) -> None:
    response = await client.post("/storage/upload/initiate", json={}, headers={"Authorization": ""})
    assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Key")
    assert "Missing API key" in response.json()["detail"]


async def test_direct_upload_with_a_key_or_a_cdn_token(client: httpx.AsyncClient) -> None:
    direct = await client.post(
        "/files/upload", content=png_bytes(), headers={"Content-Type": "image/png", "X-Fal-File-Name": "a.png"}
    )
    assert direct.status_code == 200, direct.text
    assert direct.json()["access_url"].endswith("/a.png")

    token = (await client.post("/storage/auth/token?storage_type=fal-cdn-v3", json={})).json()
    assert token["token_type"] == "Bearer" and token["base_url"] == "https://gpu.example.com"
    with_token = await client.post(
        "/files/upload",
        content=png_bytes(),
        headers={"Authorization": f"Bearer {token['token']}", "Content-Type": "image/png"},
    )
    assert with_token.status_code == 200, with_token.text
    forged = await client.post("/files/upload", content=b"x", headers={"Authorization": "Bearer abc.def"})
    assert forged.status_code == 401
    anonymous = await client.post("/files/upload", content=b"x", headers={"Authorization": ""})
    assert anonymous.status_code == 401


async def test_uploads_may_exceed_the_json_body_limit(tmp_path: Path, store: SqlJobStore) -> None:
    settings = Settings(data_dir=tmp_path, max_body_bytes=1000, max_upload_bytes=50_000, auth=False)
    app = create_app(settings, store=store, readiness=lambda _endpoint: None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        upload = await client.post("/files/upload", content=b"x" * 20_000, headers={"Content-Type": "image/png"})
        assert upload.status_code == 200, upload.text
        json_body = await client.post("/queue/fal-ai/wan-i2v", json={"prompt": "x" * 5000})
        assert json_body.status_code == 413
