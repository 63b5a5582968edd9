"""A private S3-compatible server (moto's server mode) for the tests, started once per session on demand.

`s3_server` runs `python -m moto.server` on a free loopback port; `s3_bucket` gives each test a bucket of
its own on it, with dummy credentials (moto accepts any).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

S3_SERVER_START_TIMEOUT_S = 30.0
ACCESS_KEY_ID = "framecast-test-key"
SECRET_ACCESS_KEY = "framecast-test-secret"
REGION = "us-east-1"


def new_client(endpoint_url: str) -> S3Client:
    import boto3
    from botocore.config import Config

    return boto3.session.Session(
        aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY, region_name=REGION
    ).client("s3", endpoint_url=endpoint_url, config=Config(signature_version="s3v4"))


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    log_path: Path
    client: S3Client = field(repr=False)
    """One client for the whole session: making a boto3 client costs about half a second."""


@dataclass(frozen=True)
class S3Bucket:
    """A bucket that exists on the test server, and how to reach it."""

    name: str
    endpoint_url: str
    client: S3Client = field(repr=False)
    region: str = REGION
    access_key_id: str = ACCESS_KEY_ID
    secret_access_key: str = SECRET_ACCESS_KEY

    def object_keys(self) -> list[str]:
        response = self.client.list_objects_v2(Bucket=self.name)
        return sorted(item["Key"] for item in response.get("Contents", []))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _answers(endpoint_url: str) -> bool:
    try:
        httpx.get(f"{endpoint_url}/moto-api/", timeout=1.0)
    except httpx.TransportError:
        return False
    return True


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    log_path = tmp_path_factory.mktemp("s3") / "moto.log"
    port = _free_port()
    endpoint_url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + S3_SERVER_START_TIMEOUT_S
        while not _answers(endpoint_url):
            if process.poll() is not None:
                raise RuntimeError(f"moto server exited with {process.returncode}: {log_path.read_text()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"moto server did not answer within {S3_SERVER_START_TIMEOUT_S}s; see {log_path}")
            time.sleep(0.05)
        yield S3Server(endpoint_url=endpoint_url, log_path=log_path, client=new_client(endpoint_url))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> S3Bucket:
    """A new, empty bucket for this test (the server is shared, so names are unique)."""
    bucket = S3Bucket(
        name=f"test-{uuid.uuid4().hex[:20]}", endpoint_url=s3_server.endpoint_url, client=s3_server.client
    )
    bucket.client.create_bucket(Bucket=bucket.name)
    return bucket
