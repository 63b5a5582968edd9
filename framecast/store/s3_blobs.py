"""The blob store on S3 or any S3-compatible server (MinIO, R2, moto…), through boto3.

Every key lives under one bucket and one key prefix. Downloads never pass through
the API: `url_for` presigns a GET each time a result is read, so a result read a
month later still gets a working URL (a presigned URL expires, the result does not).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from framecast.store.blobs import BlobInfo, BlobNotFoundError, validate_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# SigV4 refuses presigned URLs that live longer than 7 days.
MAX_PRESIGN_EXPIRES_S = 7 * 24 * 3600
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Any valid key: its presigned URL shows where keys start in this store's URLs (path or virtual-host style).
_PROBE_KEY = "framecast-probe"


class S3BlobStore:
    """Blobs as objects `<prefix><key>` in `bucket`; `client` is a boto3 S3 client (thread-safe, shared).

    `prefix` is "" or plain segments ending in "/" (e.g. "framecast/"). `presign_expires_s` is the life of
    each URL `url_for` makes: 1 s to 7 days (SigV4's limit), else `ValueError`. Building the store signs
    one URL locally, so `client` must have credentials (or be unsigned); it makes no request.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str,
        client: S3Client,
        presign_expires_s: float,
        *,
        transfer_config: TransferConfig | None = None,
    ) -> None:
        if prefix and not prefix.endswith("/"):
            raise ValueError(f"an S3 key prefix ends with '/': {prefix!r}")
        if prefix:
            validate_key(prefix.removesuffix("/"))
        if not 1 <= presign_expires_s <= MAX_PRESIGN_EXPIRES_S:
            raise ValueError(
                f"presigned URLs live 1 to {MAX_PRESIGN_EXPIRES_S} seconds (7 days), not {presign_expires_s:g}"
            )
        self.bucket = bucket
        self.prefix = prefix
        self.client = client
        self.presign_expires_s = int(presign_expires_s)
        # boto3's managed transfer: multipart (with parallel parts) above the threshold, one PUT below.
        self.transfer_config = transfer_config or TransferConfig()
        self._origin, self._keys_path = self._url_layout()

    def _object_key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def put_bytes(self, key: str, data: bytes, content_type: str) -> BlobInfo:
        # A PUT replaces an object atomically: readers see the old bytes or the new, never a mix.
        self.client.put_object(Bucket=self.bucket, Key=self._object_key(key), Body=data, ContentType=content_type)
        return BlobInfo(key=key, size_bytes=len(data), content_type=content_type)

    def put_file(self, key: str, source: Path, content_type: str) -> BlobInfo:
        """Upload `source`, then delete it; on failure the source is kept and nothing is stored under `key`."""
        object_key = self._object_key(key)
        size_bytes = source.stat().st_size
        self.client.upload_file(
            str(source),
            self.bucket,
            object_key,
            ExtraArgs={"ContentType": content_type},
            Config=self.transfer_config,
        )
        source.unlink(missing_ok=True)
        return BlobInfo(key=key, size_bytes=size_bytes, content_type=content_type)

    def get_bytes(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._object_key(key))
        except self.client.exceptions.NoSuchKey as error:
            raise BlobNotFoundError(key) from error
        with response["Body"] as body:
            return body.read()

    def delete(self, key: str) -> None:
        # S3's DELETE succeeds for a missing key: idempotent as it stands.
        self.client.delete_object(Bucket=self.bucket, Key=self._object_key(key))

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._object_key(key))
        except ClientError as error:
            # HEAD has no body, so a missing object is only a bare 404.
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def local_path(self, key: str) -> Path | None:
        validate_key(key)
        return None

    def url_for(self, key: str, *, base_url: str) -> str:
        """A presigned GET URL, valid for `presign_expires_s` from now; `base_url` plays no part.

        Signed locally (no request). The URL also dies with the credentials that signed it: temporary
        ones (instance roles, STS) cut it short.
        """
        return self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self._object_key(key)},
            ExpiresIn=self.presign_expires_s,
        )

    def key_for_url(self, url: str, *, base_url: str) -> str | None:
        """The key of a URL of this bucket and prefix on this endpoint (presigned or plain, any query),
        or of the API's `/files/<key>` (which redirects here); None for anything else."""
        try:
            parts = urlsplit(url)
            origin = _origin(parts.scheme, parts.hostname, parts.port)
        except ValueError:
            return None
        path = unquote(parts.path)
        if origin == self._origin and path.startswith(self._keys_path):
            return path[len(self._keys_path) :]
        files_prefix = f"{base_url.rstrip('/')}/files/"
        if base_url and url.startswith(files_prefix):
            return url[len(files_prefix) :].split("?", 1)[0].split("#", 1)[0]
        return None

    def _url_layout(self) -> tuple[tuple[str, str, int | None], str]:
        """(origin, path before the key) of this store's object URLs, as boto3 writes them for this endpoint."""
        probe = urlsplit(self.url_for(_PROBE_KEY, base_url=""))
        path = unquote(probe.path)
        if not path.endswith(self.prefix + _PROBE_KEY):
            raise ValueError(f"unexpected S3 URL layout: {probe.path!r}")
        return _origin(probe.scheme, probe.hostname, probe.port), path[: -len(_PROBE_KEY)]


def _origin(scheme: str, host: str | None, port: int | None) -> tuple[str, str, int | None]:
    scheme = scheme.lower()
    return scheme, (host or "").lower(), port or _DEFAULT_PORTS.get(scheme)
