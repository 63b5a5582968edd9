"""API keys: making them, and checking the `Authorization` header of a request.

A key looks like fal's: `<key_id>:<secret>`. The key id is public (it names the
key in `framecast keys list` and the logs); only the sha256 of the whole key is
stored. Clients send it as `Authorization: Key <key>` (fal-client, @fal-ai/client)
or `Authorization: Bearer <key>` (the wavespeed SDK).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from framecast.store.credentials import ApiKeyRecord, CredentialStore

KEY_ID_PREFIX = "fc_"
SCHEMES = ("key", "bearer")


class AuthenticationError(Exception):
    """No usable key: the message says what was wrong, never what a valid key would be."""


@dataclass(frozen=True)
class NewApiKey:
    key: str  # shown once
    record: ApiKeyRecord


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key(name: str | None, *, now: float) -> NewApiKey:
    """A fresh key: a 48-bit public id and a 256-bit secret. `name` defaults to `key-<id>`."""
    random_id = secrets.token_hex(6)
    key_id = KEY_ID_PREFIX + random_id
    key = f"{key_id}:{secrets.token_urlsafe(32)}"
    return NewApiKey(key=key, record=ApiKeyRecord(key_id, name or f"key-{random_id}", key_digest(key), now, None))


def parse_authorization(header: str | None) -> str:
    """The key in `Key <key>` or `Bearer <key>`. Raises `AuthenticationError`."""
    if not header:
        raise AuthenticationError(
            "Missing API key: send 'Authorization: Key <key>' (create one: framecast keys create)"
        )
    scheme, _, key = header.strip().partition(" ")
    if scheme.lower() not in SCHEMES or not key.strip():
        raise AuthenticationError("The Authorization header must be 'Key <key>' or 'Bearer <key>'")
    return key.strip()


class Authenticator:
    def __init__(self, credentials: CredentialStore) -> None:
        self.credentials = credentials

    def authenticate(self, header: str | None) -> ApiKeyRecord:
        """The active key that `header` carries. Raises `AuthenticationError` (missing, unknown or revoked).

        One indexed read per call, no cache: a revoked key stops working at once, on every replica.
        """
        key = parse_authorization(header)
        key_id, separator, _secret = key.partition(":")
        record = self.credentials.find_api_key(key_id) if separator else None
        if record is None or not hmac.compare_digest(record.secret_sha256, key_digest(key)):
            raise AuthenticationError("Invalid API key")
        if not record.is_active:
            raise AuthenticationError(f"API key {record.key_id} ({record.name}) has been revoked")
        return record
