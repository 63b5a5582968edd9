"""The catalogue end to end: real workers report each binding, and submit refuses what none can run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.e2e.conftest import new_data_dir, png_data_uri
from tests.e2e.server import FramecastServer, wait_for

pytestmark = pytest.mark.e2e


def models_by_id(server: FramecastServer) -> dict[str, dict[str, Any]]:
    with server.client() as client:
        body = client.get("/models").json()
    return {entry["endpoint_id"]: entry for entry in body["endpoints"]}


def test_tiny_profile_catalogue(server: FramecastServer) -> None:
    models = models_by_id(server)
    wan = models["fal-ai/wan-i2v"]
    assert (wan["state"], wan["engine"], wan["accepting"], wan["workers_ready"]) == (
        "ready",
        "diffusers-wan-i2v",
        True,
        1,
    )
    assert wan["model"].endswith("models/tiny/wan21_i2v")
    # Every endpoint is served by the tiny profile: the closed ones mapped onto a tiny open engine.
    assert all(entry["accepting"] for entry in models.values())
    veo = models["fal-ai/veo2/image-to-video"]
    assert (veo["state"], veo["engine"]) == ("ready", "diffusers-skyreels-df")
    assert models["fal-ai/magi-distilled/image-to-video"]["engine"] == "diffusers-skyreels-df"
    assert models["fal-ai/magi-distilled/image-to-video"]["model"].endswith("models/tiny/skyreels_v2_df")


def test_schema_errors_come_before_availability(fal: ModuleType) -> None:
    with pytest.raises(fal.FalClientHTTPError) as caught:
        fal.submit("fal-ai/pixverse/v4.5/image-to-video", arguments={"prompt": "p", "resolution": "4k"})
    assert caught.value.status_code == 422
    assert {entry["loc"][1] for entry in caught.value.message} == {"image_url", "resolution"}


def test_openapi_documents_are_served(server: FramecastServer) -> None:
    with server.client() as client:
        document = client.get("/api/openapi/queue/openapi.json", params={"endpoint_id": "fal-ai/wan-i2v"}).json()
        whole = client.get("/openapi.json").json()
    assert document["servers"] == [{"url": f"{server.url}/queue"}]
    assert document["components"]["schemas"]["WanI2vInput"]["properties"]["num_frames"]["maximum"] == 100
    assert "/queue/fal-ai/framepack/flf2v" in whole["paths"]


@pytest.fixture(scope="module")
def mixed_server(
    tmp_path_factory: pytest.TempPathFactory, certificates: tuple[Path, Path, Path], tiny_models: Path
) -> Iterator[FramecastServer]:
    """One worker, three bindings: one loads, one lacks its weights, one has broken weights."""
    base = tmp_path_factory.mktemp("mixed")
    data_dir = new_data_dir(base, tiny_models)
    broken = base / "broken-pipeline"
    broken.mkdir()
    (broken / "model_index.json").write_text(json.dumps({"_class_name": "WanImageToVideoPipeline"}))
    bindings = base / "bindings.toml"
    bindings.write_text(
        f"""
[defaults]
device = "cpu"
dtype = "float32"

[endpoints."fal-ai/wan-i2v"]
engine = "diffusers-wan-i2v"
weights = "${{data_dir}}/models/tiny/wan21_i2v"
render_scale = 0.125

[endpoints."fal-ai/wan-flf2v"]
engine = "diffusers-wan-i2v"
weights = "./not-downloaded"

[endpoints."fal-ai/wan-pro/image-to-video"]
engine = "diffusers-wan-i2v"
weights = "{broken}"
"""
    )
    instance = FramecastServer(
        data_dir=data_dir, certificates=certificates, extra_arguments=["--models", str(bindings)]
    )
    instance.start()
    yield instance
    instance.stop()


def test_each_binding_reports_its_own_state(mixed_server: FramecastServer) -> None:
    def settled() -> dict[str, dict[str, Any]] | None:
        models = models_by_id(mixed_server)
        return None if models["fal-ai/wan-pro/image-to-video"]["state"] == "loading" else models

    models = wait_for(settled, timeout_s=60, what="every binding loaded or failed")
    assert models["fal-ai/wan-i2v"]["state"] == "ready"
    flf2v = models["fal-ai/wan-flf2v"]
    assert flf2v["state"] == "weights_missing" and "not-downloaded" in flf2v["reason"]
    pro = models["fal-ai/wan-pro/image-to-video"]
    assert pro["state"] == "engine_error" and "could not load" in pro["reason"]
    (worker,) = (mixed_server.health() or {"workers": []})["workers"]
    assert worker["endpoints"] == ["fal-ai/wan-i2v"], "it claims only what it loaded"
    assert {key: entry["state"] for key, entry in worker["bindings"].items()} == {
        "fal-ai/wan-i2v": "ready",
        "fal-ai/wan-flf2v": "weights_missing",
        "fal-ai/wan-pro/image-to-video": "engine_error",
    }

    with mixed_server.client() as client:
        refused = client.post(
            "/queue/fal-ai/wan-flf2v",
            json={"prompt": "p", "start_image_url": png_data_uri(), "end_image_url": png_data_uri()},
        )
        assert refused.status_code == 503 and "weights missing" in refused.json()["detail"]
        accepted = client.post(
            "/run/fal-ai/wan-i2v",
            json={"prompt": "p", "image_url": png_data_uri(), "resolution": "480p", "num_inference_steps": 1},
            timeout=120,
        )
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["metadata"]["engine"] == "diffusers-wan-i2v"


def test_an_unbound_closed_endpoint_is_refused_with_how_to_bind_it(mixed_server: FramecastServer) -> None:
    arguments = {"prompt": "a lego chef", "image_url": png_data_uri(), "duration": "6s"}
    with mixed_server.client() as client:
        response = client.post("/queue/fal-ai/veo2/image-to-video", json=arguments)
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert "closed model" in detail and "docs/bindings.md" in detail
