"""API keys: their shape, and what `Authenticator` accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from framecast.service.auth import AuthenticationError, Authenticator, key_digest, new_api_key
from framecast.store.credentials import SqlCredentialStore
from framecast.store.database import SqlDatabase


@pytest.fixture
def credentials(tmp_path: Path) -> SqlCredentialStore:
    return SqlCredentialStore(SqlDatabase(f"sqlite:///{tmp_path / 'jobs.db'}"))


def test_a_new_key_is_stored_only_as_its_digest() -> None:
    made = new_api_key(None, now=5.0)
    key_id, secret = made.key.split(":")
    assert key_id == made.record.key_id and key_id.startswith("fc_") and len(secret) >= 43
    assert made.record.name == "key-" + key_id.removeprefix("fc_")
    assert made.record.secret_sha256 == key_digest(made.key) and made.key not in repr(made.record)
    assert new_api_key("ci", now=5.0).key != new_api_key("ci", now=5.0).key


def test_key_and_bearer_schemes_are_accepted(credentials: SqlCredentialStore) -> None:
    made = new_api_key("ci", now=1.0)
    credentials.add_api_key(made.record)
    authenticator = Authenticator(credentials)
    for header in (f"Key {made.key}", f"Bearer {made.key}", f"key   {made.key} ", f"BEARER {made.key}"):
        assert authenticator.authenticate(header).key_id == made.record.key_id


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "Missing API key"),
        ("", "Missing API key"),
        ("Basic abc", "must be 'Key <key>' or 'Bearer <key>'"),
        ("Key", "must be 'Key <key>' or 'Bearer <key>'"),
        ("Key no-separator", "Invalid API key"),
        ("Key fc_unknown:secret", "Invalid API key"),
    ],
)
def test_bad_headers_are_refused(credentials: SqlCredentialStore, header: str | None, message: str) -> None:
    with pytest.raises(AuthenticationError, match=message):
        Authenticator(credentials).authenticate(header)


def test_a_wrong_secret_and_a_revoked_key_are_refused(credentials: SqlCredentialStore) -> None:
    made = new_api_key("laptop", now=1.0)
    credentials.add_api_key(made.record)
    authenticator = Authenticator(credentials)
    with pytest.raises(AuthenticationError, match="Invalid API key"):
        authenticator.authenticate(f"Key {made.record.key_id}:wrong")
    credentials.revoke_api_key("laptop", now=2.0)
    with pytest.raises(AuthenticationError, match=rf"API key {made.record.key_id} \(laptop\) has been revoked"):
        authenticator.authenticate(f"Key {made.key}")
