"""The CredentialStore contract (API keys, signing keys, secrets). PostgreSQL joins it in scale-out."""

from __future__ import annotations

import threading

import pytest

from framecast.store.credentials import (
    ApiKeyRecord,
    CredentialStore,
    DuplicateKeyNameError,
    SigningKeyRecord,
    SqlCredentialStore,
    active_signing_keys,
)
from framecast.store.database import SqlDatabase


@pytest.fixture
def credentials(database: SqlDatabase) -> CredentialStore:
    return SqlCredentialStore(database)


def api_key(key_id: str, name: str, created_at: float = 1.0) -> ApiKeyRecord:
    return ApiKeyRecord(key_id, name, "ab" * 32, created_at, None)


def test_keys_are_added_found_listed_and_revoked_once(credentials: CredentialStore) -> None:
    credentials.add_api_key(api_key("fc_1", "ci", 1.0))
    credentials.add_api_key(api_key("fc_2", "laptop", 2.0))
    assert [record.key_id for record in credentials.list_api_keys()] == ["fc_1", "fc_2"]
    assert credentials.find_api_key("fc_2") == api_key("fc_2", "laptop", 2.0)
    assert credentials.find_api_key("fc_nope") is None

    by_name = credentials.revoke_api_key("laptop", now=10.0)
    assert by_name is not None and (by_name.key_id, by_name.revoked_at, by_name.is_active) == ("fc_2", 10.0, False)
    again = credentials.revoke_api_key("fc_2", now=20.0)
    assert again is not None and again.revoked_at == 10.0, "revoking again keeps the first time"
    assert credentials.revoke_api_key("nobody", now=30.0) is None
    first = credentials.find_api_key("fc_1")
    assert first is not None and first.is_active


def test_names_are_unique_even_after_revocation(credentials: CredentialStore) -> None:
    credentials.add_api_key(api_key("fc_1", "ci"))
    credentials.revoke_api_key("ci", now=5.0)
    with pytest.raises(DuplicateKeyNameError):
        credentials.add_api_key(api_key("fc_2", "ci"))
    assert [record.key_id for record in credentials.list_api_keys()] == ["fc_1"]


def test_signing_keys_list_newest_first_and_retire(credentials: CredentialStore) -> None:
    old = SigningKeyRecord("k-old", "Ed25519", "AAAA", 1.0, None)
    new = SigningKeyRecord("k-new", "Ed25519", "BBBB", 2.0, None)
    credentials.add_signing_key(old)
    credentials.add_signing_key(new)
    assert [record.kid for record in credentials.list_signing_keys()] == ["k-new", "k-old"]
    assert credentials.retire_signing_key("k-new", now=3.0)
    assert credentials.retire_signing_key("k-new", now=4.0), "idempotent"
    assert not credentials.retire_signing_key("k-missing", now=4.0)
    assert [record.kid for record in active_signing_keys(credentials.list_signing_keys())] == ["k-old"]


def test_a_secret_is_made_once_and_shared(database: SqlDatabase) -> None:
    results: list[str] = []

    def read() -> None:
        results.append(SqlCredentialStore(database).secret("s", now=1.0))

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1 and len(results[0]) == 64
    assert SqlCredentialStore(database).secret("other", now=1.0) != results[0]
