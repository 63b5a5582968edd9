"""The blob store contract (inputs and outputs), and its local-filesystem implementation.

Keys are relative, slash-separated paths of plain segments; anything that could
climb out of the store (`..`, absolute paths, backslashes, dot-files) is refused.
Results never hold URLs, only `framecast-blob://<key>` references: the API turns
them into absolute URLs when a result is read, so a changed public URL (or, on S3,
a fresh presigned URL) is always right.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

BLOB_SCHEME = "framecast-blob://"

_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_KEY_PATTERN = re.compile(rf"^{_SEGMENT}(/{_SEGMENT}){{0,7}}$")


class InvalidKeyError(ValueError):
    """A key that is not a plain relative path."""


class BlobNotFoundError(KeyError):
    pass


def unguessable_name(suffix: str = "") -> str:
    """A random key segment (128 bits, hex) that `validate_key` always accepts; `suffix` like ".mp4"."""
    return secrets.token_hex(16) + suffix


def validate_key(key: str) -> str:
    """Return `key` unchanged, or raise `InvalidKeyError` for anything but plain relative segments."""
    if not _KEY_PATTERN.match(key) or any(part in ("..", ".") for part in key.split("/")):
        raise InvalidKeyError(f"invalid file key: {key!r}")
    return key


def blob_reference(key: str) -> str:
    return BLOB_SCHEME + validate_key(key)


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size_bytes: int
    content_type: str


class BlobStore(Protocol):
    def put_bytes(self, key: str, data: bytes, content_type: str) -> BlobInfo:
        """Store `data` under `key`, replacing any previous value atomically."""
        ...

    def put_file(self, key: str, source: Path, content_type: str) -> BlobInfo:
        """Move `source` into the store under `key` (the source is gone afterwards)."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """Raises `BlobNotFoundError`."""
        ...

    def delete(self, key: str) -> None:
        """Idempotent."""
        ...

    def exists(self, key: str) -> bool: ...

    def local_path(self, key: str) -> Path | None:
        """The file to serve directly, or None when the store is remote (then use `url_for`)."""
        ...

    def url_for(self, key: str, *, base_url: str) -> str:
        """An absolute URL that downloads the blob."""
        ...

    def key_for_url(self, url: str, *, base_url: str) -> str | None:
        """The key that `url_for` made `url` from (query and fragment ignored), or None when it is not one of ours.

        The key is not validated: reading it raises `InvalidKeyError` if it is not a plain key.
        """
        ...


class LocalBlobStore:
    """Files under one directory, served by the API at `/files/<key>`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / validate_key(key)).resolve()
        # Belt and braces on top of the key grammar: never leave the root, even through a symlink.
        if not path.is_relative_to(self.root.resolve()):
            raise InvalidKeyError(f"invalid file key: {key!r}")
        return path

    def put_bytes(self, key: str, data: bytes, content_type: str) -> BlobInfo:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return BlobInfo(key=key, size_bytes=len(data), content_type=content_type)

    def put_file(self, key: str, source: Path, content_type: str) -> BlobInfo:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(source, path)
        except OSError:
            # Another filesystem: copy next to the target, then rename into place.
            temporary = path.with_name(".incoming-" + path.name)
            shutil.copyfile(source, temporary)
            os.replace(temporary, path)
            source.unlink(missing_ok=True)
        return BlobInfo(key=key, size_bytes=path.stat().st_size, content_type=content_type)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as error:
            raise BlobNotFoundError(key) from error

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def url_for(self, key: str, *, base_url: str) -> str:
        return f"{self._files_prefix(base_url)}{validate_key(key)}"

    def key_for_url(self, url: str, *, base_url: str) -> str | None:
        prefix = self._files_prefix(base_url)
        if not url.startswith(prefix):
            return None
        return url[len(prefix) :].split("?", 1)[0].split("#", 1)[0]

    @staticmethod
    def _files_prefix(base_url: str) -> str:
        return f"{base_url.rstrip('/')}/files/"
