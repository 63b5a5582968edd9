"""`--storage`: which blob store a process uses, and the check that it works before the first job.

`local` keeps files under DATA_DIR/files (served by the API at /files); `s3://bucket/prefix` keeps
them in an S3 bucket (or any S3-compatible server at `--s3-endpoint-url`). boto3 is imported only
for S3.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from framecast.store.blobs import BlobStore, InvalidKeyError, LocalBlobStore, validate_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from framecast.settings import Settings

LOCAL_STORAGE = "local"
# S3's rules for new buckets (3-63 characters; lowercase letters, digits, dots and hyphens).
_BUCKET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_CONNECT_TIMEOUT_S = 5.0
_READ_TIMEOUT_S = 60.0


class StorageUnavailableError(RuntimeError):
    """The configured storage cannot be used (missing bucket, no or wrong credentials, unreachable)."""


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str
    """"" or plain key segments ending in "/"."""


def parse_storage_url(storage: str) -> S3Location | None:
    """None for `local`, the bucket and key prefix for `s3://bucket[/prefix]`; raises `ValueError` otherwise."""
    if storage == LOCAL_STORAGE:
        return None
    expected = "expected 'local' or 's3://BUCKET[/PREFIX]'"
    parts = urlsplit(storage)
    if parts.scheme != "s3":
        raise ValueError(f"storage {storage!r}: {expected}")
    if "@" in parts.netloc or parts.query or parts.fragment:
        raise ValueError(
            "storage: give only s3://BUCKET[/PREFIX]; credentials go in --s3-access-key-id/--s3-secret-access-key "
            "or the AWS environment"
        )
    bucket = parts.netloc
    if not _BUCKET_PATTERN.match(bucket):
        raise ValueError(
            f"storage {storage!r}: {bucket!r} is not an S3 bucket name (3-63 lowercase letters, digits, '.' and '-'); "
            f"{expected}"
        )
    prefix = parts.path.strip("/")
    if prefix:
        try:
            validate_key(prefix)
        except InvalidKeyError:
            raise ValueError(
                f"storage {storage!r}: the prefix {prefix!r} must be plain path segments "
                "(letters, digits, '.', '_', '-')"
            ) from None
        prefix += "/"
    return S3Location(bucket=bucket, prefix=prefix)


def open_blob_store(settings: Settings) -> BlobStore:
    """The blob store `settings.storage` names, checked: raises `StorageUnavailableError` when S3 cannot be used.

    For S3 this makes one HeadBucket request, so a missing bucket or a bad key fails at start, not at the first job.
    """
    location = parse_storage_url(settings.storage)
    if location is None:
        return LocalBlobStore(settings.files_dir)
    from framecast.store.s3_blobs import S3BlobStore

    client = s3_client(settings)
    check_bucket(client, location.bucket, endpoint=settings.s3_endpoint_url or "AWS S3")
    return S3BlobStore(location.bucket, location.prefix, client, settings.s3_presign_expires_s)


def s3_client(settings: Settings) -> S3Client:
    """A boto3 S3 client for the settings. Keys not given in settings come from boto3's standard chain
    (AWS_* environment variables, ~/.aws config and credentials files, container and instance roles)."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=settings.s3_secret_access_key,
        region_name=settings.s3_region,
    )
    config = Config(
        # SigV4 everywhere: presigned URLs then carry X-Amz-Expires and work on every S3-compatible server.
        signature_version="s3v4",
        connect_timeout=_CONNECT_TIMEOUT_S,
        read_timeout=_READ_TIMEOUT_S,
        retries={"mode": "standard", "max_attempts": 3},
        # botocore 1.36 began sending CRC checksums on every upload; several S3-compatible servers refuse them.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return session.client("s3", endpoint_url=settings.s3_endpoint_url, config=config)


def check_bucket(client: S3Client, bucket: str, *, endpoint: str) -> None:
    """One HeadBucket; raises `StorageUnavailableError` saying what is wrong (never showing a secret)."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

    where = f"S3 bucket {bucket!r} at {endpoint}"
    try:
        client.head_bucket(Bucket=bucket)
    except (NoCredentialsError, PartialCredentialsError):
        raise StorageUnavailableError(
            f"{where}: no S3 credentials found. Give --s3-access-key-id and --s3-secret-access-key, or set them "
            "the AWS way (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance or container role)"
        ) from None
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise StorageUnavailableError(f"{where} does not exist; create it first") from None
        if code in ("403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise StorageUnavailableError(
                f"{where}: access denied (HTTP {status}). Check the access key and secret, and that they may "
                "read and write this bucket"
            ) from None
        if code in ("301", "PermanentRedirect", "400", "AuthorizationHeaderMalformed"):
            headers = error.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
            region = headers.get("x-amz-bucket-region")
            hint = f"; it is in {region}: pass --s3-region {region}" if region else "; check --s3-region"
            raise StorageUnavailableError(f"{where}: wrong region (HTTP {status}){hint}") from None
        raise StorageUnavailableError(f"{where}: HeadBucket failed with {code or status}") from None
    except BotoCoreError as error:
        raise StorageUnavailableError(f"{where} cannot be reached: {error}") from None
