"""The upload ledger: which stored files were uploaded by users, and when each expires.

Blob stores have no common way to list files by age (a local directory, an S3
bucket), so the ledger keeps that in the job database, and the API's sweeper
deletes what has expired from whichever blob store is configured.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

import sqlalchemy as sa

from framecast.store.database import SqlDatabase, uploads


@dataclass(frozen=True)
class UploadRecord:
    key: str
    created_at: float
    expires_at: float
    size_bytes: int
    content_type: str


class UploadLedger(Protocol):
    def record_upload(self, record: UploadRecord) -> None:
        """Idempotent: recording a key again replaces its entry."""
        ...

    def expired_uploads(self, *, now: float, limit: int) -> list[UploadRecord]:
        """Uploads whose `expires_at` is at or before `now`, oldest expiry first."""
        ...

    def forget_upload(self, key: str) -> None:
        """Idempotent."""
        ...


class SqlUploadLedger:
    def __init__(self, database: SqlDatabase) -> None:
        self.database = database

    def record_upload(self, record: UploadRecord) -> None:
        with self.database.write() as connection:
            connection.execute(uploads.delete().where(uploads.c.key == record.key))
            connection.execute(uploads.insert().values(**asdict(record)))

    def expired_uploads(self, *, now: float, limit: int) -> list[UploadRecord]:
        with self.database.read() as connection:
            rows = connection.execute(
                sa.select(uploads).where(uploads.c.expires_at <= now).order_by(uploads.c.expires_at).limit(limit)
            ).mappings()
            return [UploadRecord(**row) for row in rows]

    def forget_upload(self, key: str) -> None:
        with self.database.write() as connection:
            connection.execute(uploads.delete().where(uploads.c.key == key))
