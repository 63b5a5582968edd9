"""fal webhooks from a real server: signed, verifiable with our JWKS, and delivered once after an outage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from tests.e2e.conftest import new_data_dir, png_data_uri
from tests.e2e.server import FramecastServer, free_port, wait_for
from tests.e2e.test_fal_client import ENDPOINT, wan_input
from tests.webhook_receiver import WebhookReceiver, verify_fal_webhook

pytestmark = pytest.mark.e2e


def logs(server: FramecastServer, request_id: str) -> list[str]:
    try:
        with server.client() as client:
            body = client.get(f"/queue/{ENDPOINT}/requests/{request_id}/status", params={"logs": 1}).json()
    except httpx.TransportError:
        return []
    return [entry["message"] for entry in body["logs"] or []]


def test_a_signed_webhook_verifies_against_the_servers_jwks(fal: ModuleType, server: FramecastServer) -> None:
    receiver = WebhookReceiver().start()
    try:
        handle = fal.submit(ENDPOINT, arguments=wan_input(fal), webhook_url=receiver.url + "?job=1")
        (webhook,) = receiver.wait_for(1)
    finally:
        receiver.stop()
    with server.client(authenticated=False) as client:
        jwks = client.get("/.well-known/jwks.json").json()
    assert verify_fal_webhook(webhook.headers, webhook.body, jwks)
    assert not verify_fal_webhook(webhook.headers, webhook.body.replace(b'"OK"', b'"ERROR"'), jwks)
    assert webhook.path == "/hook?job=1"
    assert webhook.headers["x-fal-webhook-request-id"] == handle.request_id
    body = webhook.json()
    assert (body["request_id"], body["gateway_request_id"], body["status"]) == (handle.request_id,) * 2 + ("OK",)
    assert body["payload"] == handle.get(), "the payload is the result, with the same URLs"
    assert body["payload"]["metadata"]["engine"] == "diffusers-wan-i2v"


@pytest.fixture
def retrying_server(
    tmp_path: Path, certificates: tuple[Path, Path, Path], tiny_models: Path
) -> Iterator[FramecastServer]:
    instance = FramecastServer(
        data_dir=new_data_dir(tmp_path, tiny_models),
        certificates=certificates,
        extra_arguments=["--webhook-first-retry-s", "0.2", "--webhook-max-attempts", "20"],
    )
    instance.start()
    yield instance
    instance.stop()


def test_a_receiver_that_was_down_gets_the_webhook_once_even_across_a_restart(
    retrying_server: FramecastServer,
) -> None:
    receiver = WebhookReceiver(port=free_port())
    with retrying_server.client() as client:
        response = client.post(
            f"/queue/{ENDPOINT}?fal_webhook={receiver.url}",
            json={"prompt": "p", "image_url": png_data_uri(), "num_inference_steps": 2, "resolution": "480p"},
        )
        request_id = response.json()["request_id"]

    def failures() -> int:
        return sum(message.startswith("Webhook attempt") for message in logs(retrying_server, request_id))

    wait_for(lambda: failures() >= 1, timeout_s=90, what="a failed webhook attempt")
    retrying_server.kill()
    retrying_server.start()
    before = failures()
    wait_for(lambda: failures() > before, timeout_s=60, what="a retry after the restart")

    receiver.start()
    try:
        (webhook,) = receiver.wait_for(1)
        delivered = wait_for(
            lambda: [m for m in logs(retrying_server, request_id) if m.startswith("Webhook delivered")],
            timeout_s=30,
            what="the delivery to be recorded",
        )
        assert len(delivered) == 1
        assert len(receiver.received) == 1, "exactly once"
    finally:
        receiver.stop()
    assert webhook.json()["status"] == "OK"
    assert failures() >= 2
