"""The UploadLedger contract. PostgreSQL joins it in scale-out."""

from __future__ import annotations

import pytest

from framecast.store.database import SqlDatabase
from framecast.store.uploads import SqlUploadLedger, UploadLedger, UploadRecord


@pytest.fixture
def ledger(database: SqlDatabase) -> UploadLedger:
    return SqlUploadLedger(database)


def test_expired_uploads_come_oldest_first_and_are_forgotten(ledger: UploadLedger) -> None:
    for key, expires_at in (("uploads/b/x.png", 20.0), ("uploads/a/x.png", 10.0), ("uploads/c/x.png", 30.0)):
        ledger.record_upload(UploadRecord(key, 0.0, expires_at, 5, "image/png"))
    assert [record.key for record in ledger.expired_uploads(now=20.0, limit=10)] == [
        "uploads/a/x.png",
        "uploads/b/x.png",
    ]
    assert [record.key for record in ledger.expired_uploads(now=20.0, limit=1)] == ["uploads/a/x.png"]
    ledger.forget_upload("uploads/a/x.png")
    ledger.forget_upload("uploads/a/x.png")
    assert [record.key for record in ledger.expired_uploads(now=100.0, limit=10)] == [
        "uploads/b/x.png",
        "uploads/c/x.png",
    ]


def test_recording_a_key_again_replaces_it(ledger: UploadLedger) -> None:
    ledger.record_upload(UploadRecord("uploads/a/x.png", 0.0, 10.0, 5, "image/png"))
    ledger.record_upload(UploadRecord("uploads/a/x.png", 0.0, 50.0, 7, "image/png"))
    assert ledger.expired_uploads(now=20.0, limit=10) == []
    assert ledger.expired_uploads(now=60.0, limit=10) == [UploadRecord("uploads/a/x.png", 0.0, 50.0, 7, "image/png")]
