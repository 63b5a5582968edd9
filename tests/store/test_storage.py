"""`--storage` and its S3 options: parsing, validation, flags, the local default (S3 itself: test_blobs_contract)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from framecast.cli import SERVE_SETTINGS, WORKER_SETTINGS, build_parser, load_settings
from framecast.settings import Settings
from framecast.store.blobs import LocalBlobStore
from framecast.store.storage import S3Location, open_blob_store, parse_storage_url


@pytest.mark.parametrize(
    ("storage", "expected"),
    [
        ("local", None),
        ("s3://my-bucket", S3Location("my-bucket", "")),
        ("s3://my-bucket/", S3Location("my-bucket", "")),
        ("s3://my.bucket-2/framecast", S3Location("my.bucket-2", "framecast/")),
        ("s3://my-bucket/a/b_c/", S3Location("my-bucket", "a/b_c/")),
    ],
)
def test_storage_urls_name_a_bucket_and_a_prefix(storage: str, expected: S3Location | None) -> None:
    assert parse_storage_url(storage) == expected


@pytest.mark.parametrize(
    ("storage", "complaint"),
    [
        ("s3", "expected 'local' or 's3://BUCKET"),
        ("file:///srv/files", "expected 'local' or 's3://BUCKET"),
        ("gs://my-bucket/x", "expected 'local' or 's3://BUCKET"),
        ("s3://ab/x", "is not an S3 bucket name"),
        ("s3://My_Bucket/x", "is not an S3 bucket name"),
        ("s3:///x", "is not an S3 bucket name"),
        ("s3://my-bucket/../x", "plain path segments"),
        ("s3://my-bucket/a//b", "plain path segments"),
        ("s3://key:secret@my-bucket/x", "credentials go in --s3-access-key-id"),
        ("s3://my-bucket/x?region=eu", "give only s3://BUCKET"),
    ],
)
def test_bad_storage_urls_are_refused_clearly(storage: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint.replace("?", r"\?")):
        parse_storage_url(storage)
    with pytest.raises(ValidationError, match="storage"):
        Settings(storage=storage)


def test_s3_options_need_s3_storage_and_keys_come_in_pairs() -> None:
    with pytest.raises(ValidationError, match="--s3-endpoint-url: only with --storage s3://"):
        Settings(s3_endpoint_url="http://127.0.0.1:9000")
    with pytest.raises(ValidationError, match="given together"):
        Settings(storage="s3://my-bucket/x", s3_access_key_id="key")
    assert Settings(storage="s3://my-bucket/x", s3_region="eu-west-1").s3_region == "eu-west-1"


def test_serve_and_worker_take_the_storage_flags() -> None:
    flags = ["storage", "s3_endpoint_url", "s3_region", "s3_access_key_id", "s3_secret_access_key"]
    assert set(flags) <= set(SERVE_SETTINGS) and set(flags) <= set(WORKER_SETTINGS)
    arguments = build_parser().parse_args(
        ["worker", "--storage", "s3://my-bucket/p", "--s3-endpoint-url", "http://minio:9000",
         "--s3-presign-expires-s", "3600"]
    )  # fmt: skip
    settings = load_settings(arguments, WORKER_SETTINGS)
    assert (settings.storage, settings.s3_endpoint_url, settings.s3_presign_expires_s) == (
        "s3://my-bucket/p", "http://minio:9000", 3600
    )  # fmt: skip


def test_local_storage_is_the_default(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    store = open_blob_store(settings)
    assert settings.storage == "local" and isinstance(store, LocalBlobStore)
    assert store.root == tmp_path / "files"
