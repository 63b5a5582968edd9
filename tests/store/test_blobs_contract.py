"""The BlobStore contract. Every implementation runs this suite (S3 joins it in scale-out)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from framecast.store.blobs import (
    BlobNotFoundError,
    BlobStore,
    InvalidKeyError,
    LocalBlobStore,
    blob_reference,
    unguessable_name,
    validate_key,
)


@pytest.fixture(params=["local"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
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
    assert blobs.url_for("outputs/a.mp4", base_url="https://host:1/").startswith("https://host:1/")


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
    assert blobs.key_for_url(url + "?download=1#t", base_url="https://gpu.example.com") == "uploads/abc/cat.png"
    assert blobs.key_for_url(url, base_url="https://other.example.com") is None
    assert blobs.key_for_url("https://gpu.example.com/queue/x", base_url="https://gpu.example.com") is None
