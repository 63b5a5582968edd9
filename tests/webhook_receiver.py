"""A real HTTP webhook receiver for tests, and fal's verification written out from its docs (protocol.md §4).

The verification is independent of framecast's signing code: it is what a user's receiver does with our JWKS.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

MAX_SKEW_S = 300


@dataclass(frozen=True)
class ReceivedWebhook:
    path: str
    headers: dict[str, str]
    body: bytes
    # What the receiver answered, and when (Unix seconds): a signature's timestamp is judged at receipt.
    status_code: int = 200
    received_at: float = field(default_factory=time.time)

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """Records every POST; answers `status_code`, or what `respond(headers, body)` returns when given.

    Start and stop it on a fixed port to play a receiver that is down.
    """

    def __init__(
        self, port: int = 0, status_code: int = 200, respond: Callable[[dict[str, str], bytes], int] | None = None
    ) -> None:
        self.port = port
        self.status_code = status_code
        self.respond = respond
        self.received: list[ReceivedWebhook] = []
        self._changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {name.lower(): value for name, value in self.headers.items()}
                status_code = receiver.status_code if receiver.respond is None else receiver.respond(headers, body)
                self.send_response(status_code)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with receiver._changed:
                    receiver.received.append(ReceivedWebhook(self.path, headers, body, status_code))
                    receiver._changed.notify_all()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, count: int, timeout_s: float = 60.0) -> list[ReceivedWebhook]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.received) >= count, timeout=timeout_s):
                raise TimeoutError(f"{len(self.received)} webhooks received, expected {count}")
            return list(self.received)


def verify_fal_webhook(headers: dict[str, str], body: bytes, jwks: dict[str, Any], *, now: float | None = None) -> bool:
    """fal's receiver check: timestamp within 5 minutes, and an Ed25519 signature by any key of the JWKS over
    `request_id \\n user_id \\n timestamp \\n sha256_hex(body)`."""
    try:
        request_id = headers["x-fal-webhook-request-id"]
        user_id = headers["x-fal-webhook-user-id"]
        timestamp = headers["x-fal-webhook-timestamp"]
        signature = bytes.fromhex(headers["x-fal-webhook-signature"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > MAX_SKEW_S:
        return False
    message = "\n".join([request_id, user_id, timestamp, hashlib.sha256(body).hexdigest()]).encode()
    for key in jwks["keys"]:
        if key.get("kty") != "OKP" or key.get("crv") != "Ed25519":
            continue
        public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(key["x"] + "=" * (-len(key["x"]) % 4)))
        try:
            public.verify(signature, message)
            return True
        except InvalidSignature:
            continue
    return False
