"""Relay mode: a Framecast server relaying to a second, real Framecast server as its upstream.

The session's tiny server is the upstream. The relaying server runs no GPU worker: its
bindings relay every endpoint below to the upstream, with the upstream's key in its
environment. The tests check the result and its copied video, an upstream failure, a cancel
that reaches the upstream, and a SIGKILL of the relaying server mid-job: after the restart
it follows the same upstream request and never submits a second one.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from tests.e2e.conftest import new_data_dir, png_data_uri
from tests.e2e.server import FramecastServer, run_with_fal_client, wait_for
from tests.e2e.test_closed_mapped import CLOSED

pytestmark = pytest.mark.e2e

# The relaying server reads the upstream key from its environment (FramecastServer passes it on).
UPSTREAM_KEY_ENV = "TEST_UPSTREAM_FAL_KEY"
RELAYED = "fal-ai/wan-i2v"
RELAYED_INPUT = {"prompt": "p", "image_url": png_data_uri(), "num_inference_steps": 2, "resolution": "480p"}


def relay_bindings(path: Path, upstream: FramecastServer, endpoint_ids: list[str]) -> Path:
    entries = [
        f'[endpoints."{endpoint_id}"]\n'
        'engine = "relay"\n'
        f'weights = "{upstream.url}/queue"\n'
        f'options = {{ key_env = "{UPSTREAM_KEY_ENV}", '
        f'ca_file = "{upstream.ca_path}", poll_interval_s = 0.1 }}\n'
        for endpoint_id in endpoint_ids
    ]
    path.write_text("\n".join(entries))
    return path


@pytest.fixture(scope="module")
def relay_server(
    tmp_path_factory: pytest.TempPathFactory,
    certificates: tuple[Path, Path, Path],
    tiny_models: Path,
    server: FramecastServer,
) -> Iterator[FramecastServer]:
    base = tmp_path_factory.mktemp("relay")
    bindings = relay_bindings(base / "relay.toml", server, [RELAYED, *CLOSED])
    assert server.api_key is not None
    instance = FramecastServer(
        data_dir=new_data_dir(base, tiny_models),
        certificates=certificates,
        workers=0,
        extra_arguments=["--models", str(bindings), "--lease-s", "3", "--reaper-interval-s", "0.2"],
    )
    with pytest.MonkeyPatch.context() as patch:
        # Kept for the module: the restart test starts the server again.
        patch.setenv(UPSTREAM_KEY_ENV, server.api_key)
        instance.start()
        yield instance
        instance.stop()


def submit(server: FramecastServer, endpoint_id: str, arguments: dict[str, Any], fault: str | None = None) -> str:
    headers = {"X-Framecast-Test-Fault": fault} if fault else {}
    with server.client() as client:
        response = client.post(f"/queue/{endpoint_id}", json=arguments, headers=headers)
    assert response.status_code == 200, response.text
    request_id: str = response.json()["request_id"]
    return request_id


def status(server: FramecastServer, endpoint_id: str, request_id: str) -> dict[str, Any]:
    app = "/".join(endpoint_id.split("/")[:2])
    with server.client() as client:
        body: dict[str, Any] = client.get(f"/queue/{app}/requests/{request_id}/status", params={"logs": 1}).json()
    return body


def messages(server: FramecastServer, endpoint_id: str, request_id: str) -> list[str]:
    return [entry["message"] for entry in status(server, endpoint_id, request_id)["logs"] or []]


def result(server: FramecastServer, endpoint_id: str, request_id: str) -> tuple[int, dict[str, Any]]:
    wait_for(
        lambda: status(server, endpoint_id, request_id)["status"] == "COMPLETED",
        timeout_s=120,
        interval_s=0.1,
        what=f"{request_id} to complete",
    )
    app = "/".join(endpoint_id.split("/")[:2])
    with server.client() as client:
        response = client.get(f"/queue/{app}/requests/{request_id}")
    return response.status_code, response.json()


def upstream_request_id(server: FramecastServer, request_id: str) -> str:
    lines = wait_for(
        lambda: [m for m in messages(server, RELAYED, request_id) if "as upstream request" in m],
        timeout_s=60,
        what="the upstream submit",
    )
    return str(lines[0].rsplit(" ", 1)[1])


def frame_count(server: FramecastServer, url: str) -> int:
    with server.client() as client:
        response = client.get(url)
    assert response.status_code == 200
    with av.open(io.BytesIO(response.content)) as container:
        return sum(1 for _ in container.decode(container.streams.video[0]))


def test_a_relayed_job_copies_the_video_and_says_who_served_it(
    relay_server: FramecastServer, server: FramecastServer
) -> None:
    request_id = submit(relay_server, RELAYED, RELAYED_INPUT)
    code, body = result(relay_server, RELAYED, request_id)
    assert code == 200, body
    assert body["video"]["url"].startswith(relay_server.url + "/files/outputs/"), "copied into our storage"
    assert frame_count(relay_server, body["video"]["url"]) == 81
    metadata = body["metadata"]
    assert metadata["engine"] == "relay" and metadata["model"] == f"{server.url}/queue/{RELAYED}"
    assert metadata["upstream"]["engine"] == "diffusers-wan-i2v", "the upstream's own metadata is kept"
    upstream_id = metadata["upstream_request_id"]
    logs = messages(relay_server, RELAYED, request_id)
    assert any(line.startswith("Upstream: Generating 81 frames") for line in logs), "upstream logs mirrored"
    assert status(server, RELAYED, upstream_id)["status"] == "COMPLETED"
    with relay_server.client(authenticated=False) as client:
        models = {entry["endpoint_id"]: entry for entry in client.get("/models").json()["endpoints"]}
    assert (models[RELAYED]["state"], models[RELAYED]["engine"]) == ("ready", "relay")
    assert models[RELAYED]["model"] == f"{server.url}/queue/{RELAYED}"


def test_an_upstream_failure_keeps_its_code_and_detail(relay_server: FramecastServer) -> None:
    request_id = submit(relay_server, RELAYED, RELAYED_INPUT, fault="raise_at_step=1")
    code, body = result(relay_server, RELAYED, request_id)
    assert code == 500
    assert "Injected test fault at step 1" in body["detail"]
    assert body["error_type"] == "internal_server_error"
    final = status(relay_server, RELAYED, request_id)
    assert final["error"].startswith("Upstream https://localhost:")


def test_a_cancel_reaches_the_upstream(relay_server: FramecastServer, server: FramecastServer) -> None:
    request_id = submit(relay_server, RELAYED, RELAYED_INPUT, fault="block_at_step=1")
    upstream_id = upstream_request_id(relay_server, request_id)
    wait_for(
        lambda: any("holding at step 1" in m for m in messages(relay_server, RELAYED, request_id)),
        timeout_s=60,
        what="the upstream to hold",
    )
    with relay_server.client() as client:
        assert client.put(f"/queue/fal-ai/wan-i2v/requests/{request_id}/cancel").status_code == 202
    code, body = result(relay_server, RELAYED, request_id)
    assert (code, body["error_type"]) == (499, "client_cancelled")
    assert status(server, RELAYED, upstream_id)["error_type"] == "client_cancelled", "cancelled upstream too"


def test_a_restart_mid_job_follows_the_same_upstream_request(
    relay_server: FramecastServer, server: FramecastServer
) -> None:
    request_id = submit(relay_server, RELAYED, RELAYED_INPUT, fault="block_at_step=1")
    upstream_id = upstream_request_id(relay_server, request_id)
    relay_server.kill()
    relay_server.start()
    wait_for(
        lambda: any(
            f"Resuming upstream request {upstream_id}" in m for m in messages(relay_server, RELAYED, request_id)
        ),
        timeout_s=60,
        what="the relay to resume after the restart",
    )
    with relay_server.client() as client:
        assert client.put(f"/queue/fal-ai/wan-i2v/requests/{request_id}/cancel").status_code == 202
    code, _ = result(relay_server, RELAYED, request_id)
    assert code == 499
    submits = [m for m in messages(relay_server, RELAYED, request_id) if "as upstream request" in m]
    assert len(submits) == 1, "submitted upstream exactly once"
    assert status(server, RELAYED, upstream_id)["error_type"] == "client_cancelled"


def test_every_closed_endpoint_is_relayed_for_the_fal_client(
    relay_server: FramecastServer, server: FramecastServer
) -> None:
    """Each closed endpoint through the unmodified fal-client on the relaying server, run by the upstream."""
    images = [png_data_uri(96, 64, (30, 120, 200)), png_data_uri(96, 64, (200, 60, 20))]
    jobs = [
        {"endpoint": endpoint_id, "arguments": {**case.arguments, **dict(zip(case.images, images, strict=False))}}
        for endpoint_id, case in CLOSED.items()
    ]
    for (endpoint_id, case), entry in zip(CLOSED.items(), run_with_fal_client(relay_server, jobs), strict=True):
        assert "error" not in entry, (endpoint_id, entry)
        output = entry["result"]
        engine, _model, fps = case.engine
        assert output["video"]["url"].startswith(relay_server.url + "/files/outputs/"), endpoint_id
        assert frame_count(relay_server, output["video"]["url"]) == round(case.seconds * fps), endpoint_id
        metadata = output["metadata"]
        assert (metadata["engine"], metadata["served_by"]) == ("relay", "relay"), endpoint_id
        assert metadata["model"] == f"{server.url}/queue/{endpoint_id}"
        assert (metadata["upstream"]["engine"], metadata["upstream"]["served_by"]) == (engine, "mapped")
    with relay_server.client(authenticated=False) as client:
        entries = {entry["endpoint_id"]: entry for entry in client.get("/models").json()["endpoints"]}
    for endpoint_id in CLOSED:
        assert (entries[endpoint_id]["state"], entries[endpoint_id]["served_by"]) == ("ready", "relay")
