"""User uploads: files clients send us to use as inputs, kept for `upload_ttl_s`.

Two ways in, both streamed to a temporary file under a running size cap and then
moved into the blob store:
- a ticket (`create_ticket`): fal's `storage/upload/initiate` and WaveSpeed's
  `media/uploads` hand out an `upload_url` that authorises itself (a signed
  token in the path, valid for `ticket_ttl_s`), and the client PUTs raw bytes;
- a direct upload (`store`) from a request that already carried an API key.

The stored key's extension comes from the content type, never from the client's
file name, so an upload can't be served back as HTML.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

from framecast.service.tokens import InvalidTokenError, TokenSigner
from framecast.store.blobs import BlobStore, unguessable_name
from framecast.store.uploads import UploadLedger, UploadRecord

UPLOAD_PREFIX = "uploads/"
TOKEN_PURPOSE = "upload"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "video/quicktime": "mov",
    "audio/mpeg": "mp3",
    "audio/wav": "wav",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class UploadTooLargeError(Exception):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"The upload is larger than the limit of {max_bytes} bytes")
        self.max_bytes = max_bytes


class UploadRefusedError(Exception):
    """A bad or expired upload URL."""


@dataclass(frozen=True)
class UploadTicket:
    key: str
    upload_url: str  # PUT the raw bytes here; no Authorization needed
    file_url: str  # where the file will be, usable as an input URL on this server
    content_type: str
    ticket_expires_at: float


@dataclass(frozen=True)
class StoredUpload:
    key: str
    file_url: str
    size_bytes: int
    content_type: str
    file_name: str
    expires_at: float  # when the sweeper deletes it


def media_type(content_type: str | None) -> str:
    """`image/png; charset=x` -> `image/png`; empty -> application/octet-stream."""
    value = (content_type or "").split(";", 1)[0].strip().lower()
    return value or DEFAULT_CONTENT_TYPE


def upload_key(file_name: str | None, content_type: str) -> str:
    """`uploads/<128 random bits>/<safe stem>.<extension of the content type>`."""
    stem = Path(file_name or "").stem
    stem = _UNSAFE.sub("_", stem).lstrip("._-")[:64] or "upload"
    return f"{UPLOAD_PREFIX}{unguessable_name()}/{stem}.{EXTENSIONS.get(content_type, 'bin')}"


class UploadService:
    def __init__(
        self,
        *,
        blobs: BlobStore,
        ledger: UploadLedger,
        signer: TokenSigner,
        tmp_dir: Path,
        max_upload_bytes: int,
        upload_ttl_s: float,
        ticket_ttl_s: float = 3600.0,
    ) -> None:
        self.blobs = blobs
        self.ledger = ledger
        self.signer = signer
        self.tmp_dir = tmp_dir
        self.max_upload_bytes = max_upload_bytes
        self.upload_ttl_s = upload_ttl_s
        self.ticket_ttl_s = ticket_ttl_s

    def create_ticket(self, *, file_name: str | None, content_type: str | None, base_url: str) -> UploadTicket:
        """A signed, single-purpose PUT URL for one file. Nothing is stored until the PUT arrives."""
        kind = media_type(content_type)
        key = upload_key(file_name, kind)
        expires_at = time.time() + self.ticket_ttl_s
        token = self.signer.sign(TOKEN_PURPOSE, {"key": key, "content_type": kind}, expires_at=expires_at)
        return UploadTicket(
            key=key,
            upload_url=f"{base_url}/storage/upload/{token}",
            file_url=self.blobs.url_for(key, base_url=base_url),
            content_type=kind,
            ticket_expires_at=expires_at,
        )

    async def receive(
        self, token: str, chunks: AsyncIterator[bytes], *, content_type: str | None, base_url: str
    ) -> StoredUpload:
        """The PUT of a ticket. Raises `UploadRefusedError` or `UploadTooLargeError` (nothing is kept then).

        The PUT's own Content-Type wins over the one given at initiate (fal's clients send both, the same).
        """
        try:
            claims = self.signer.verify(token, TOKEN_PURPOSE, now=time.time())
        except InvalidTokenError as error:
            raise UploadRefusedError(f"The upload URL is not valid ({error}); ask for a new one") from None
        kind = media_type(content_type) if content_type else str(claims["content_type"])
        key = str(claims["key"])
        return await self._save(chunks, key=key, content_type=kind, base_url=base_url)

    async def store(
        self, chunks: AsyncIterator[bytes], *, file_name: str | None, content_type: str | None, base_url: str
    ) -> StoredUpload:
        """A direct upload. Raises `UploadTooLargeError` (nothing is kept then)."""
        kind = media_type(content_type)
        return await self._save(chunks, key=upload_key(file_name, kind), content_type=kind, base_url=base_url)

    async def _save(self, chunks: AsyncIterator[bytes], *, key: str, content_type: str, base_url: str) -> StoredUpload:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="upload-")
        path = Path(name)
        try:
            size = 0
            with os.fdopen(descriptor, "wb") as handle:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_upload_bytes:
                        raise UploadTooLargeError(self.max_upload_bytes)
                    handle.write(chunk)
            now = time.time()
            record = UploadRecord(key, now, now + self.upload_ttl_s, size, content_type)
            # Ledger first: a crash between the two leaves an entry the sweeper clears, never an orphan file.
            await anyio.to_thread.run_sync(self.ledger.record_upload, record)
            await anyio.to_thread.run_sync(self.blobs.put_file, key, path, content_type)
        finally:
            path.unlink(missing_ok=True)
        return StoredUpload(
            key=key,
            file_url=self.blobs.url_for(key, base_url=base_url),
            size_bytes=size,
            content_type=content_type,
            file_name=key.rsplit("/", 1)[-1],
            expires_at=record.expires_at,
        )

    def sweep(self, *, now: float, limit: int = 500) -> list[str]:
        """Delete expired uploads (blocking); returns their keys. Idempotent, safe on several replicas at once."""
        swept = []
        for record in self.ledger.expired_uploads(now=now, limit=limit):
            self.blobs.delete(record.key)
            self.ledger.forget_upload(record.key)
            swept.append(record.key)
        return swept
