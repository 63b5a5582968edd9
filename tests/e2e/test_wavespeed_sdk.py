"""The unmodified `wavespeed` SDK (PyPI) against a real `framecast serve --models tiny` over TLS.

The SDK is configured only with `base_url` and `api_key`; TLS trust comes from
`REQUESTS_CA_BUNDLE` (the SDK uses `requests`). What the SDK cannot send (a test
fault header, `?webhook=`) goes through httpx, as a curl user would.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import io
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
import wavespeed  # type: ignore[import-untyped]
from PIL import Image

from tests.e2e.conftest import png_data_uri
from tests.e2e.server import FramecastServer, wait_for

pytestmark = pytest.mark.e2e

MODEL = "wavespeed-ai/framepack"
FRAMES = 30
TIMEOUT_S = 180.0
ENGINE = "diffusers-framepack"


def framepack_input(**overrides: Any) -> dict[str, Any]:
    """Small and fast on CPU: WaveSpeed's minimum frames and steps, at 480p."""
    return {
        "image": png_data_uri(96, 64),
        "prompt": "a cat",
        "num_frames": FRAMES,
        "num_inference_steps": 4,
        "resolution": "480p",
        "seed": 11,
        **overrides,
    }


@pytest.fixture
def client(server: FramecastServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_path))
    return wavespeed.Client(base_url=server.url, api_key=server.api_key)


def bearer_client(server: FramecastServer) -> httpx.Client:
    """httpx with the SDK's own auth scheme."""
    return httpx.Client(
        base_url=server.url, verify=str(server.ca_path), timeout=TIMEOUT_S,
        headers={"Authorization": f"Bearer {server.api_key}"},
    )  # fmt: skip


def frame_count(server: FramecastServer, url: str) -> int:
    with server.client() as http:
        response = http.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(response.content), mode="r") as container:
        return sum(1 for _ in container.decode(container.streams.video[0]))


def wait_finished(client: Any, task_id: str) -> dict[str, Any]:
    """The task once completed or failed, read with the SDK's public `get_result`."""

    def finished() -> dict[str, Any] | None:
        task: dict[str, Any] = client.get_result(task_id)["data"]
        return task if task["status"] in ("completed", "failed") else None

    result: dict[str, Any] = wait_for(finished, timeout_s=TIMEOUT_S, interval_s=0.1, what=f"{task_id} to finish")
    return result


def test_run_returns_a_video_with_the_requested_frames(server: FramecastServer, client: Any) -> None:
    output = client.run(MODEL, framepack_input(), timeout=TIMEOUT_S, poll_interval=0.1)
    assert len(output["outputs"]) == 1
    assert output["outputs"][0].startswith(f"{server.url}/files/")
    assert frame_count(server, output["outputs"][0]) == FRAMES


def test_sync_mode_returns_the_finished_task(server: FramecastServer, client: Any) -> None:
    output = client.run(MODEL, framepack_input(seed=12), timeout=TIMEOUT_S, enable_sync_mode=True)
    assert len(output["outputs"]) == 1
    assert frame_count(server, output["outputs"][0]) == FRAMES


def test_uploaded_image_is_a_valid_input(server: FramecastServer, client: Any, tmp_path: Path) -> None:
    path = tmp_path / "start.png"
    Image.new("RGB", (96, 64), (10, 200, 90)).save(path)
    url = client.upload(str(path))
    assert url.startswith(f"{server.url}/files/uploads/")
    output = client.run(MODEL, framepack_input(image=url), timeout=TIMEOUT_S, poll_interval=0.1)
    assert frame_count(server, output["outputs"][0]) == FRAMES


def test_a_failed_task_shows_status_failed_with_the_error(server: FramecastServer, client: Any) -> None:
    fault = {"X-Framecast-Test-Fault": "raise_at_step=1"}
    with bearer_client(server) as http:
        submitted = http.post(f"/api/v3/{MODEL}", json=framepack_input(), headers=fault)
        assert submitted.status_code == 200, submitted.text
        task = wait_finished(client, submitted.json()["data"]["id"])
        assert (task["status"], task["outputs"]) == ("failed", [])
        assert "Injected test fault at step 1" in task["error"]

        # Sync mode answers the failed task itself, still with HTTP 200.
        synced = http.post(f"/api/v3/{MODEL}", json=framepack_input(enable_sync_mode=True), headers=fault)
        assert synced.status_code == 200, synced.text
        assert synced.json()["data"]["status"] == "failed"
        assert "Injected test fault at step 1" in synced.json()["data"]["error"]


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    """A plain-HTTP receiver on 127.0.0.1 that records each POST and answers 200."""

    deliveries: list[Delivery] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/wavespeed?source=test"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.deliveries.append(Delivery({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                receiver.arrived.set()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    instance = WebhookReceiver().start()
    yield instance
    instance.stop()


def verify_signature(secret: str, delivery: Delivery, *, now: float) -> None:
    """WaveSpeed's documented check, written independently of framecast's signer (protocol.md §5)."""
    webhook_id = delivery.headers["webhook-id"]
    timestamp = delivery.headers["webhook-timestamp"]
    version, _, signature = delivery.headers["webhook-signature"].partition(",")
    assert version == "v3"
    assert abs(now - int(timestamp)) <= 300
    # The key is the secret without `whsec_`, used as text (not base64-decoded).
    key = secret[len("whsec_") :].encode()
    expected = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + delivery.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, signature)


def test_webhook_is_the_signed_task_with_input(server: FramecastServer, client: Any, receiver: WebhookReceiver) -> None:
    with bearer_client(server) as http:
        secret_response = http.get("/api/v3/webhook/secret")
        assert secret_response.status_code == 200
        secret = secret_response.json()["data"]["secret"]
        assert secret.startswith("whsec_")
        submitted = http.post(f"/api/v3/{MODEL}", json=framepack_input(seed=13), params={"webhook": receiver.url})
        assert submitted.status_code == 200, submitted.text
    task_id = submitted.json()["data"]["id"]

    assert receiver.arrived.wait(TIMEOUT_S), "no webhook arrived"
    delivery = receiver.deliveries[0]
    verify_signature(secret, delivery, now=time.time())
    body = json.loads(delivery.body)
    assert "code" not in body and "data" not in body, "the webhook body is the bare task, no envelope"
    assert (body["id"], body["model"], body["status"], body["error"]) == (task_id, MODEL, "completed", "")
    assert body["urls"]["get"] == f"{server.url}/api/v3/predictions/{task_id}/result"
    assert (body["input"]["prompt"], body["input"]["seed"]) == ("a cat", 13)
    assert body["metadata"]["engine"] == ENGINE
    assert frame_count(server, body["outputs"][0]) == FRAMES
    # The SDK sees the same task.
    assert client.get_result(task_id)["data"]["outputs"] == body["outputs"]
