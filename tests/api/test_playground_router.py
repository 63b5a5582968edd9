"""The playground's static pages, in-process: public, every referenced file served, nothing else."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

import httpx
import pytest

from framecast.app import create_app
from framecast.settings import Settings
from framecast.store.sql_jobs import SqlJobStore

pytestmark = pytest.mark.anyio
PLAYGROUND = resources.files("framecast.playground")


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    store = SqlJobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    app = create_app(Settings(data_dir=tmp_path), store=store, bindings=[])
    # No key: the pages are public (the API behind them is not).
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


def playground_files(suffix: str) -> list[str]:
    return sorted(entry.name for entry in PLAYGROUND.iterdir() if entry.name.endswith(suffix))


async def test_pages_are_public_html_under_a_script_policy(client: httpx.AsyncClient) -> None:
    for path in ("/", "/playground/fal-ai/wan-i2v", "/playground/fal-ai/kling-video/v2.1/pro/image-to-video"):
        response = await client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert '<script type="module"' in response.text
    assert (await client.get("/api/requests")).status_code == 401


async def test_unknown_endpoint_page_is_a_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/playground/fal-ai/no-such-model")
    assert response.status_code == 404
    assert "Unknown endpoint" in response.text


async def test_every_referenced_asset_is_served_with_its_type(client: httpx.AsyncClient) -> None:
    referenced: set[str] = set()
    for page in playground_files(".html"):
        referenced |= set(re.findall(r"/playground/assets/([\w.-]+)", PLAYGROUND.joinpath(page).read_text()))
    for module in playground_files(".js"):
        # Relative ES module imports must name files that exist, or the page dies in the browser.
        imports = re.findall(r"""from\s+"\./([\w.-]+)";""", PLAYGROUND.joinpath(module).read_text())
        assert all(PLAYGROUND.joinpath(name).is_file() for name in imports), (module, imports)
        referenced |= set(imports)
    assert {"style.css", "home.js", "endpoint.js", "api.js"} <= referenced
    assert referenced == set(playground_files(".js")) | {"style.css"}, "every script is used"
    for name in referenced:
        response = await client.get(f"/playground/assets/{name}")
        assert response.status_code == 200, name
        expected = "text/javascript" if name.endswith(".js") else "text/css"
        assert response.headers["content-type"].startswith(expected)
        assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("name", ["__init__.py", "index.html", "..%2Fapp.py", "missing.js", "Style.css"])
async def test_only_scripts_and_styles_are_assets(client: httpx.AsyncClient, name: str) -> None:
    assert (await client.get(f"/playground/assets/{name}")).status_code == 404
