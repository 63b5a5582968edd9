"""The BlobStore contract, run against every implementation (local files; S3 on moto's server), then each one's own."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from boto3.s3.transfer import TransferConfig
from pydantic import ValidationError

from framecast.settings import Settings
from framecast.store.blobs import (
    BlobNotFoundError,
    BlobStore,
    InvalidKeyError,
    LocalBlobStore,
    blob_reference,
    unguessable_name,
    validate_key,
)
from framecast.store.s3_blobs import MAX_PRESIGN_EXPIRES_S, S3BlobStore
from framecast.store.storage import StorageUnavailableError, open_blob_store
from tests.s3_server import S3Bucket, S3Server

PREFIX = "framecast"


def s3_settings(bucket: S3Bucket, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "storage": f"s3://{bucket.name}/{PREFIX}",
        "s3_endpoint_url": bucket.endpoint_url,
        "s3_region": bucket.region,
        "s3_access_key_id": bucket.access_key_id,
        "s3_secret_access_key": bucket.secret_access_key,
        **overrides,
    }
    return Settings(**values)


def s3_store(bucket: S3Bucket, tmp_path: Path, **overrides: Any) -> S3BlobStore:
    store = open_blob_store(s3_settings(bucket, tmp_path, **overrides))
    assert isinstance(store, S3BlobStore)
    return store


@pytest.fixture(params=["local", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "s3":
        # Only the S3 runs start moto's server.
        yield s3_store(request.getfixturevalue("s3_bucket"), tmp_path)
    else:
        yield LocalBlobStore(tmp_path / "files")


def test_put_get_delete(blobs: BlobStore) -> None:
    info = blobs.put_bytes("outputs/abc/video.mp4", b"1234", "video/mp4")
    assert (info.size_bytes, info.content_type) == (4, "video/mp4")
    assert blobs.get_bytes("outputs/abc/video.mp4") == b"1234"
    assert blobs.exists("outputs/abc/video.mp4")
    blobs.put_bytes("outputs/abc/video.mp4", b"replaced", "video/mp4")
    assert blobs.get_bytes("outputs/abc/video.mp4") == b"replaced"
    blobs.delete("outputs/abc/video.mp4")
    blobs.delete("outputs/abc/video.mp4")
    assert not blobs.exists("outputs/abc/video.mp4")
    with pytest.raises(BlobNotFoundError):
        blobs.get_bytes("outputs/abc/video.mp4")


def test_put_file_moves_the_source(blobs: BlobStore, tmp_path: Path) -> None:
    source = tmp_path / "out.mp4"
    source.write_bytes(b"video")
    info = blobs.put_file("outputs/x/out.mp4", source, "video/mp4")
    assert info.size_bytes == 5
    assert not source.exists()
    assert blobs.get_bytes("outputs/x/out.mp4") == b"video"


def test_url_for_is_absolute(blobs: BlobStore) -> None:
    blobs.put_bytes("outputs/a.mp4", b"x", "video/mp4")
    url = urlsplit(blobs.url_for("outputs/a.mp4", base_url="https://host:1/"))
    assert url.scheme in ("http", "https") and url.netloc and url.path.endswith("/outputs/a.mp4")


def test_local_urls_are_under_the_base_url(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "files")
    assert store.url_for("outputs/a.mp4", base_url="https://host:1/") == "https://host:1/files/outputs/a.mp4"
    assert store.local_path("outputs/a.mp4") == (tmp_path / "files" / "outputs" / "a.mp4").resolve()


@pytest.mark.parametrize(
    "key",
    ["../x", "a/../../x", "/etc/passwd", "a//b", ".hidden", "a/.git/x", "a\\b", "", "a/b/", "a/%2e%2e/b", "a b"],
)
def test_traversal_and_odd_keys_are_refused(blobs: BlobStore, key: str) -> None:
    with pytest.raises(InvalidKeyError):
        blobs.put_bytes(key, b"x", "application/octet-stream")
    with pytest.raises(InvalidKeyError):
        blobs.get_bytes(key)


def test_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "files")
    (tmp_path / "secret").write_text("s")
    (tmp_path / "files" / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(InvalidKeyError):
        store.get_bytes("link")


def test_blob_reference_validates() -> None:
    assert blob_reference("outputs/a.mp4") == "framecast-blob://outputs/a.mp4"
    assert validate_key("inputs/r/image_url.png") == "inputs/r/image_url.png"
    with pytest.raises(InvalidKeyError):
        blob_reference("../a")


def test_unguessable_names_are_always_valid_keys() -> None:
    # token_urlsafe once produced names starting with '-', which keys refuse: a lost output 1 time in 64.
    names = {unguessable_name(".mp4") for _ in range(5000)}
    assert len(names) == 5000
    for name in names:
        assert validate_key(f"outputs/request/{name}") and len(name) == 36


def test_a_files_url_gives_back_its_key(blobs: BlobStore) -> None:
    url = blobs.url_for("uploads/abc/cat.png", base_url="https://gpu.example.com/")
    assert blobs.key_for_url(url, base_url="https://gpu.example.com") == "uploads/abc/cat.png"
    decorated = url + ("&" if "?" in url else "?") + "download=1#t"
    assert blobs.key_for_url(decorated, base_url="https://gpu.example.com") == "uploads/abc/cat.png"
    assert (
        blobs.key_for_url("https://elsewhere.example.com/uploads/abc/cat.png", base_url="https://gpu.example.com")
        is None
    )
    assert blobs.key_for_url("https://gpu.example.com/queue/x", base_url="https://gpu.example.com") is None
    assert blobs.key_for_url("https://[broken/uploads/abc/cat.png", base_url="https://gpu.example.com") is None


def test_a_local_url_of_another_base_is_not_ours(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "files")
    url = store.url_for("uploads/abc/cat.png", base_url="https://gpu.example.com/")
    assert store.key_for_url(url, base_url="https://other.example.com") is None


# S3's own behaviour, on moto's server.


def test_a_presigned_url_downloads_the_bytes_with_their_type_and_ranges(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    store = s3_store(s3_bucket, tmp_path)
    store.put_bytes("outputs/r/video.mp4", b"0123456789", "video/mp4")
    url = store.url_for("outputs/r/video.mp4", base_url="https://gpu.example.com")
    assert url.startswith(f"{s3_bucket.endpoint_url}/{s3_bucket.name}/{PREFIX}/outputs/r/video.mp4?")
    whole = httpx.get(url)
    assert (whole.status_code, whole.content, whole.headers["content-type"]) == (200, b"0123456789", "video/mp4")
    part = httpx.get(url, headers={"Range": "bytes=2-5"})
    assert (part.status_code, part.content) == (206, b"2345")
    assert s3_bucket.object_keys() == [f"{PREFIX}/outputs/r/video.mp4"], "every object lives under the prefix"


def test_presigned_urls_live_as_long_as_the_setting_says(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    store = s3_store(s3_bucket, tmp_path, s3_presign_expires_s=3600)
    query = parse_qs(urlsplit(store.url_for("outputs/a.mp4", base_url="")).query)
    assert query["X-Amz-Expires"] == ["3600"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    default = parse_qs(urlsplit(s3_store(s3_bucket, tmp_path).url_for("outputs/a.mp4", base_url="")).query)
    assert default["X-Amz-Expires"] == [str(MAX_PRESIGN_EXPIRES_S)], "the default is SigV4's longest, 7 days"


def test_presign_lifetimes_beyond_sigv4s_limit_are_refused(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="s3_presign_expires_s"):
        s3_settings(s3_bucket, tmp_path, s3_presign_expires_s=MAX_PRESIGN_EXPIRES_S + 1)
    with pytest.raises(ValueError, match="7 days"):
        S3BlobStore(s3_bucket.name, "", s3_bucket.client, MAX_PRESIGN_EXPIRES_S + 1)
    with pytest.raises(ValueError, match="7 days"):
        S3BlobStore(s3_bucket.name, "", s3_bucket.client, 0.5)


def test_our_bucket_urls_give_back_their_keys_and_no_others(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    store = s3_store(s3_bucket, tmp_path)
    url = store.url_for("uploads/abc/cat.png", base_url="https://gpu.example.com")
    plain = url.split("?", 1)[0]
    base = "https://gpu.example.com"
    assert store.key_for_url(plain, base_url=base) == "uploads/abc/cat.png", "an unsigned URL is ours too"
    shouted = plain.replace("http://", "HTTP://")
    assert store.key_for_url(shouted, base_url=base) == "uploads/abc/cat.png", "the scheme is case-insensitive"
    assert store.key_for_url(f"{base}/files/uploads/abc/cat.png?x=1", base_url=base) == "uploads/abc/cat.png", (
        "the API's /files/ URL redirects to the bucket, so it is ours"
    )
    endpoint = s3_bucket.endpoint_url
    foreign = [
        f"{endpoint}/other-bucket/{PREFIX}/uploads/abc/cat.png",
        f"{endpoint}/{s3_bucket.name}/elsewhere/uploads/abc/cat.png",
        f"{endpoint}/{s3_bucket.name}/{PREFIX}",
        plain.replace("http://", "https://"),
        plain.replace("127.0.0.1", "127.0.0.2"),
        f"https://{s3_bucket.name}.s3.amazonaws.com/{PREFIX}/uploads/abc/cat.png",
    ]
    for other in foreign:
        assert store.key_for_url(other, base_url=base) is None, other


def test_a_url_key_is_read_only_if_valid(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    store = s3_store(s3_bucket, tmp_path)
    sneaky = f"{s3_bucket.endpoint_url}/{s3_bucket.name}/{PREFIX}/uploads/%2e%2e/%2e%2e/secret"
    key = store.key_for_url(sneaky, base_url="https://gpu.example.com")
    assert key == "uploads/../../secret"
    with pytest.raises(InvalidKeyError):
        store.get_bytes(key)


def test_big_files_go_up_in_parts_and_keep_their_type(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    part_bytes = 5 * 1024 * 1024  # S3's smallest part
    store = S3BlobStore(
        s3_bucket.name,
        "big/",
        s3_bucket.client,
        60,
        transfer_config=TransferConfig(multipart_threshold=part_bytes, multipart_chunksize=part_bytes),
    )
    data = bytes(range(256)) * (part_bytes // 256) + b"tail"
    source = tmp_path / "big.mp4"
    source.write_bytes(data)
    info = store.put_file("outputs/r/big.mp4", source, "video/mp4")
    assert info.size_bytes == len(data) and not source.exists()
    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key="big/outputs/r/big.mp4")
    assert head["ETag"].strip('"').endswith("-2"), "uploaded as two parts"
    assert head["ContentType"] == "video/mp4"
    assert store.get_bytes("outputs/r/big.mp4") == data


def test_s3_has_no_local_path_but_checks_the_key(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    store = s3_store(s3_bucket, tmp_path)
    assert store.local_path("outputs/a.mp4") is None
    with pytest.raises(InvalidKeyError):
        store.local_path("../a.mp4")


def test_a_missing_bucket_fails_at_start_with_a_clear_message(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    settings = s3_settings(s3_bucket, tmp_path, storage="s3://no-such-bucket-here/x")
    with pytest.raises(StorageUnavailableError, match=r"'no-such-bucket-here' .* does not exist; create it first"):
        open_blob_store(settings)


def test_missing_credentials_fail_at_start_with_a_clear_message(
    s3_bucket: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    settings = s3_settings(s3_bucket, tmp_path, s3_access_key_id=None, s3_secret_access_key=None)
    with pytest.raises(StorageUnavailableError, match="no S3 credentials found"):
        open_blob_store(settings)


def test_credentials_from_the_aws_environment_are_used(
    s3_bucket: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_bucket.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_bucket.secret_access_key)
    store = open_blob_store(s3_settings(s3_bucket, tmp_path, s3_access_key_id=None, s3_secret_access_key=None))
    url = store.url_for("outputs/a.mp4", base_url="")
    assert f"X-Amz-Credential={s3_bucket.access_key_id}" in url


def test_an_unreachable_endpoint_fails_at_start(s3_bucket: S3Bucket, s3_server: S3Server, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    settings = s3_settings(s3_bucket, tmp_path, s3_endpoint_url=f"http://127.0.0.1:{closed_port}")
    with pytest.raises(StorageUnavailableError, match="cannot be reached"):
        open_blob_store(settings)


def test_the_secret_never_shows(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    settings = s3_settings(s3_bucket, tmp_path)
    assert s3_bucket.secret_access_key not in repr(settings)
    with pytest.raises(ValidationError) as raised:
        s3_settings(s3_bucket, tmp_path, ssl_certfile=tmp_path / "cert.pem")
    assert s3_bucket.secret_access_key not in str(raised.value)
