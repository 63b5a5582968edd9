"""Webhook delivery: signing, the retry schedule, and the sender that drains the outbox.

fal's format (protocol.md §4): POST the OK/ERROR payload, signed with Ed25519 over
`request_id \\n user_id \\n timestamp \\n sha256_hex(body)`, in the headers
`X-Fal-Webhook-Request-Id`, `-User-Id`, `-Timestamp` and `-Signature` (hex).
Receivers verify against the public keys at `/.well-known/jwks.json`.

WaveSpeed's format (protocol.md §5): POST the bare task object plus `input`,
signed with HMAC-SHA256 over `"{webhook-id}.{webhook-timestamp}.{body}"`, sent
as `webhook-signature: v3,<hex>`.

Every POST goes through the SSRF-safe transport. A delivery that fails is
retried with exponential backoff and ±20% jitter: by default 10 tries spread
over about 2 hours (15 s, 30 s, 1 min, ... 32 min). Each attempt is written to
the job's log.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from framecast.inputs.errors import InputError
from framecast.inputs.safe_fetch import FetchPolicy, post_bytes
from framecast.logs import bind_request_id
from framecast.store.credentials import CredentialStore, SigningKeyRecord, active_signing_keys
from framecast.store.jobs import JobRecord, JobStore
from framecast.store.outbox import AttemptResult, ClaimedDelivery, WebhookOutbox

logger = logging.getLogger("framecast.webhooks")

FAL_FORMAT = "fal"
WAVESPEED_FORMAT = "wavespeed"
ED25519 = "Ed25519"
WAVESPEED_SECRET_NAME = "wavespeed_webhook_secret"
WAVESPEED_SECRET_PREFIX = "whsec_"

# (job, its public base URL, blob-reference renderer) -> the JSON body to POST.
PayloadBuilder = Callable[[JobRecord, str, Callable[[Any], Any]], Any]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _private_key(record: SigningKeyRecord) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(base64.b64decode(record.private_key))


def new_signing_key(*, now: float) -> SigningKeyRecord:
    """A fresh Ed25519 key; its id is derived from the public key."""
    private = Ed25519PrivateKey.generate()
    raw = private.private_bytes_raw()
    public = private.public_key().public_bytes_raw()
    kid = "framecast-" + hashlib.sha256(public).hexdigest()[:16]
    return SigningKeyRecord(kid, ED25519, base64.b64encode(raw).decode(), now, None)


def public_jwk(record: SigningKeyRecord) -> dict[str, str]:
    public = _private_key(record).public_key().public_bytes_raw()
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(public), "kid": record.kid, "use": "sig", "alg": "EdDSA"}


def jwks(records: list[SigningKeyRecord]) -> dict[str, list[dict[str, str]]]:
    """The JWKS document: every key not retired. Receivers try each, so a rotation breaks nobody."""
    return {"keys": [public_jwk(record) for record in active_signing_keys(records)]}


def ensure_signing_key(credentials: CredentialStore, *, now: float) -> SigningKeyRecord:
    """The key that signs now (the newest one not retired), made on first use."""
    active = active_signing_keys(credentials.list_signing_keys())
    if active:
        return active[0]
    record = new_signing_key(now=now)
    credentials.add_signing_key(record)
    return record


def fal_signature_headers(
    key: SigningKeyRecord, *, request_id: str, user_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    message = "\n".join([request_id, user_id, str(timestamp), hashlib.sha256(body).hexdigest()]).encode()
    return {
        "X-Fal-Webhook-Request-Id": request_id,
        "X-Fal-Webhook-User-Id": user_id,
        "X-Fal-Webhook-Timestamp": str(timestamp),
        "X-Fal-Webhook-Signature": _private_key(key).sign(message).hex(),
    }


def wavespeed_signature_headers(secret: str, *, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """`secret` as `GET /api/v3/webhook/secret` shows it; the `whsec_` prefix is not part of the HMAC key."""
    key = secret.removeprefix(WAVESPEED_SECRET_PREFIX).encode()
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp), "webhook-signature": f"v3,{digest}"}


def retry_delay_s(attempts_made: int, *, first_retry_s: float, rng: random.Random) -> float:
    """Seconds to wait after the `attempts_made`-th failure: first_retry_s * 2^(n-1), ±20% jitter."""
    return float(first_retry_s * 2 ** (attempts_made - 1) * rng.uniform(0.8, 1.2))


@dataclass(frozen=True)
class WebhookPolicy:
    max_attempts: int = 10
    first_retry_s: float = 15.0
    timeout_s: float = 15.0
    user_id: str = "framecast"
    fetch_policy: FetchPolicy = field(default_factory=FetchPolicy)
    batch_size: int = 32


class WebhookSender:
    """Drains the outbox. Any number of senders (API replicas) can run; claims keep them from doubling up."""

    def __init__(
        self,
        *,
        store: JobStore,
        outbox: WebhookOutbox,
        credentials: CredentialStore,
        payloads: Mapping[str, PayloadBuilder],
        render: Callable[[Any, str], Any],
        policy: WebhookPolicy,
        default_base_url: str | None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.credentials = credentials
        self.payloads = payloads
        self.render = render
        self.policy = policy
        self.default_base_url = default_base_url
        self.rng = rng or random.Random()

    async def run_forever(self, interval_s: float) -> None:
        while True:
            try:
                await self.deliver_due()
            except Exception:
                logger.exception("webhook pass failed; retrying")
            await asyncio.sleep(interval_s)

    async def deliver_due(self) -> int:
        """One pass: attempt every due delivery, at once. Returns how many were attempted."""
        # A claim outlives the POST's own deadline, so nobody else retries an attempt still in flight.
        claimed = await anyio.to_thread.run_sync(
            lambda: self.outbox.claim_due(
                now=time.time(), lease_s=self.policy.timeout_s * 2 + 30, limit=self.policy.batch_size
            )
        )
        await asyncio.gather(*(self._deliver(item) for item in claimed))
        return len(claimed)

    def encode(self, record: JobRecord, format_name: str) -> bytes:
        base_url = (record.base_url or self.default_base_url or "").rstrip("/")
        payload = self.payloads[format_name](record, base_url, lambda body: self.render(body, base_url))
        return json.dumps(payload, separators=(",", ":")).encode()

    def sign(self, record: JobRecord, format_name: str, body: bytes) -> dict[str, str]:
        now = int(time.time())
        if format_name == WAVESPEED_FORMAT:
            secret = self.credentials.secret(WAVESPEED_SECRET_NAME, now=now)
            return wavespeed_signature_headers(secret, webhook_id=record.request_id, timestamp=now, body=body)
        key = ensure_signing_key(self.credentials, now=now)
        return fal_signature_headers(
            key, request_id=record.request_id, user_id=self.policy.user_id, timestamp=now, body=body
        )

    async def _deliver(self, claimed: ClaimedDelivery) -> None:
        delivery = claimed.delivery
        # Each delivery runs in a task of its own (`deliver_due` gathers them): this names only its lines.
        bind_request_id(delivery.request_id)
        record = await anyio.to_thread.run_sync(self.store.get_job, delivery.request_id)
        attempt = delivery.attempts + 1
        status_code: int | None = None
        error: str | None = None
        if record is None:
            error = "the job is gone"
        else:
            body = self.encode(record, delivery.format)
            headers = {
                "Content-Type": "application/json",
                **(await anyio.to_thread.run_sync(self.sign, record, delivery.format, body)),
            }
            try:
                status_code = await post_bytes(delivery.url, body, headers=headers, policy=self.policy.fetch_policy)
            except InputError as failure:
                error = failure.message
        delivered = status_code is not None and 200 <= status_code < 300
        if status_code is not None and not delivered:
            error = f"HTTP {status_code}"
        now = time.time()
        url = delivery.url.split("?", 1)[0]
        if delivered:
            result = AttemptResult(
                True, status_code, None, None, f"Webhook delivered to {url} (HTTP {status_code}, attempt {attempt})"
            )
        elif attempt >= self.policy.max_attempts or record is None:
            result = AttemptResult(
                False,
                status_code,
                error,
                None,
                f"Webhook to {url} failed {attempt} times; giving up (last: {error})",
                "ERROR",
            )
        else:
            delay_s = retry_delay_s(attempt, first_retry_s=self.policy.first_retry_s, rng=self.rng)
            message = (
                f"Webhook attempt {attempt} of {self.policy.max_attempts} to {url} failed ({error}); "
                f"next try in {delay_s:.1f} s"
            )
            result = AttemptResult(False, status_code, error, now + delay_s, message, "WARN")
        await anyio.to_thread.run_sync(
            lambda: self.outbox.record_attempt(delivery.id, claimed.claim_token, result, now=now)
        )
