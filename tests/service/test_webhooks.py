"""Webhook signing, the retry schedule, and the sender against a real local receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from framecast.api.protocol import fal_webhook_payload
from framecast.inputs.safe_fetch import FetchPolicy
from framecast.service.webhooks import (
    FAL_FORMAT,
    WebhookPolicy,
    WebhookSender,
    ensure_signing_key,
    fal_signature_headers,
    jwks,
    new_signing_key,
    retry_delay_s,
    wavespeed_signature_headers,
)
from framecast.store.blobs import BLOB_SCHEME
from framecast.store.credentials import SqlCredentialStore
from framecast.store.database import SqlDatabase
from framecast.store.jobs import JobOutcome, NewJob, error_outcome
from framecast.store.outbox import SqlWebhookOutbox
from framecast.store.sql_jobs import SqlJobStore
from tests.webhook_receiver import WebhookReceiver, verify_fal_webhook

pytestmark = pytest.mark.anyio
BODY = b'{"request_id":"r1","status":"OK"}'


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_a_fal_signature_verifies_against_the_jwks_and_nothing_else() -> None:
    key = new_signing_key(now=1.0)
    now = int(time.time())
    headers = {
        name.lower(): value
        for name, value in fal_signature_headers(key, request_id="r1", user_id="u", timestamp=now, body=BODY).items()
    }
    document = jwks([key])
    assert verify_fal_webhook(headers, BODY, document)
    assert not verify_fal_webhook(headers, BODY.replace(b"OK", b"KO"), document), "tampered body"
    assert not verify_fal_webhook({**headers, "x-fal-webhook-request-id": "r2"}, BODY, document), "other request"
    assert not verify_fal_webhook(headers, BODY, document, now=now + 301), "stale timestamp"
    assert not verify_fal_webhook(headers, BODY, jwks([new_signing_key(now=2.0)])), "another server's key"


def test_rotation_keeps_old_signatures_valid_until_the_old_key_is_retired(tmp_path: Path) -> None:
    credentials = SqlCredentialStore(SqlDatabase(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    old = ensure_signing_key(credentials, now=1.0)
    assert ensure_signing_key(credentials, now=2.0) == old, "made once"
    new = new_signing_key(now=3.0)
    credentials.add_signing_key(new)
    assert ensure_signing_key(credentials, now=4.0).kid == new.kid, "the newest key signs"
    now = int(time.time())
    signed_by_old = {
        name.lower(): value
        for name, value in fal_signature_headers(old, request_id="r", user_id="u", timestamp=now, body=BODY).items()
    }
    assert [key["kid"] for key in jwks(credentials.list_signing_keys())["keys"]] == [new.kid, old.kid]
    assert verify_fal_webhook(signed_by_old, BODY, jwks(credentials.list_signing_keys()))
    credentials.retire_signing_key(old.kid, now=5.0)
    assert not verify_fal_webhook(signed_by_old, BODY, jwks(credentials.list_signing_keys()))


def test_wavespeed_signature_is_hmac_over_id_timestamp_and_body() -> None:
    headers = wavespeed_signature_headers("whsec_abc123", webhook_id="r1", timestamp=1700000000, body=BODY)
    expected = hmac.new(b"abc123", b"r1.1700000000." + BODY, hashlib.sha256).hexdigest()
    assert headers == {"webhook-id": "r1", "webhook-timestamp": "1700000000", "webhook-signature": f"v3,{expected}"}


def test_ten_tries_span_about_two_hours() -> None:
    rng = random.Random(7)
    for factor, low_s, high_s in ((0.8, 5500, 6200), (1.2, 9100, 9300)):
        fixed = random.Random()
        fixed.uniform = lambda _a, _b, f=factor: f  # type: ignore[method-assign]
        total_s = sum(retry_delay_s(attempt, first_retry_s=15.0, rng=fixed) for attempt in range(1, 10))
        assert low_s < total_s < high_s
    delays = [retry_delay_s(attempt, first_retry_s=15.0, rng=rng) for attempt in range(1, 10)]
    assert all(12 <= delay / 2**index <= 18 for index, delay in enumerate(delays)), "doubling, ±20% jitter"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    instance = WebhookReceiver().start()
    yield instance
    instance.stop()


class Harness:
    def __init__(self, tmp_path: Path, **policy: Any) -> None:
        self.database = SqlDatabase(f"sqlite:///{tmp_path / 'jobs.db'}")
        self.store = SqlJobStore(self.database)
        self.outbox = SqlWebhookOutbox(self.database)
        self.credentials = SqlCredentialStore(self.database)
        max_payload_bytes = policy.pop("max_payload_bytes", 1 << 20)
        self.sender = WebhookSender(
            store=self.store,
            outbox=self.outbox,
            credentials=self.credentials,
            payloads={FAL_FORMAT: partial(fal_webhook_payload, max_payload_bytes=max_payload_bytes)},
            render=lambda body, base: json.loads(json.dumps(body).replace(BLOB_SCHEME, f"{base}/files/")),
            policy=WebhookPolicy(fetch_policy=FetchPolicy(allow_private=policy.pop("allow_private", True)), **policy),
            default_base_url=None,
        )

    def finish(self, request_id: str, url: str, outcome: JobOutcome) -> None:
        self.store.create_job(
            NewJob(request_id, "fal-ai/wan-i2v", {}, webhook_url=url, base_url="https://gpu.example.com")
        )
        claimed = self.store.claim_job(worker_id="w", endpoint_ids=["fal-ai/wan-i2v"], lease_s=30, now=time.time())
        assert claimed is not None
        assert self.store.complete_job(request_id, claimed.lease_token, outcome, now=time.time())

    def logs(self, request_id: str) -> list[str]:
        return [event.message for event in self.store.list_events(request_id)]


async def test_an_ok_webhook_is_delivered_signed_with_rendered_urls(tmp_path: Path, receiver: WebhookReceiver) -> None:
    harness = Harness(tmp_path)
    output = {"video": {"url": BLOB_SCHEME + "outputs/r1/v.mp4"}, "seed": 3}
    harness.finish("r1", receiver.url, JobOutcome(200, output))
    assert await harness.sender.deliver_due() == 1
    (webhook,) = receiver.wait_for(1)
    assert webhook.json() == {
        "request_id": "r1",
        "gateway_request_id": "r1",
        "status": "OK",
        "payload": {"video": {"url": "https://gpu.example.com/files/outputs/r1/v.mp4"}, "seed": 3},
    }
    assert verify_fal_webhook(webhook.headers, webhook.body, jwks(harness.credentials.list_signing_keys()))
    assert webhook.headers["x-fal-webhook-user-id"] == "framecast"
    assert harness.logs("r1")[-1] == f"Webhook delivered to {receiver.url} (HTTP 200, attempt 1)"
    assert await harness.sender.deliver_due() == 0, "delivered once"


async def test_error_and_payload_error_shapes(tmp_path: Path, receiver: WebhookReceiver) -> None:
    harness = Harness(tmp_path, max_payload_bytes=200)
    harness.finish("failed", receiver.url, error_outcome(422, "bad image", "file_download_error"))
    harness.finish("big", receiver.url, JobOutcome(200, {"text": "x" * 500}))
    await harness.sender.deliver_due()
    bodies = {webhook.json()["request_id"]: webhook.json() for webhook in receiver.wait_for(2)}
    assert bodies["failed"] == {
        "request_id": "failed",
        "gateway_request_id": "failed",
        "status": "ERROR",
        "error": "Invalid status code: 422",
        "payload": {"detail": "bad image", "error_type": "file_download_error"},
    }
    big = bodies["big"]
    assert (big["status"], big["payload"]) == ("OK", None)
    assert big["payload_error"].startswith("The payload is 511 bytes, over this server's webhook limit of 200 bytes")
    assert "https://gpu.example.com/queue/fal-ai/wan-i2v/requests/big" in big["payload_error"]


async def test_a_failing_receiver_is_retried_then_given_up(tmp_path: Path, receiver: WebhookReceiver) -> None:
    harness = Harness(tmp_path, max_attempts=2, first_retry_s=0.01)
    receiver.status_code = 503
    harness.finish("r1", receiver.url, JobOutcome(200, {}))
    assert await harness.sender.deliver_due() == 1
    (delivery,) = harness.outbox.list_deliveries(["r1"])
    assert (delivery.state, delivery.attempts, delivery.last_status_code) == ("pending", 1, 503)
    assert harness.logs("r1")[-1].startswith(f"Webhook attempt 1 of 2 to {receiver.url} failed (HTTP 503); next try in")
    while await harness.sender.deliver_due() == 0:  # due within ~12 ms
        pass
    (delivery,) = harness.outbox.list_deliveries(["r1"])
    assert (delivery.state, delivery.attempts) == ("failed", 2)
    assert harness.logs("r1")[-1] == f"Webhook to {receiver.url} failed 2 times; giving up (last: HTTP 503)"
    assert len(receiver.received) == 2


async def test_private_addresses_are_refused_without_the_development_flag(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    harness = Harness(tmp_path, max_attempts=1, allow_private=False)
    harness.finish("r1", receiver.url, JobOutcome(200, {}))
    await harness.sender.deliver_due()
    (delivery,) = harness.outbox.list_deliveries(["r1"])
    assert delivery.state == "failed" and delivery.last_error is not None
    assert "not allowed" in delivery.last_error or "non-public" in delivery.last_error
    assert receiver.received == []
