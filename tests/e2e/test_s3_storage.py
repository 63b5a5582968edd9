"""`framecast serve --storage s3://…` on moto's S3 server: results are presigned bucket URLs; uploads land there."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import av
import httpx
import pytest

from tests.e2e.conftest import new_data_dir, png_data_uri
from tests.e2e.server import FramecastServer, run_with_fal_client, wait_for
from tests.s3_server import S3Bucket

pytestmark = pytest.mark.e2e

ENDPOINT = "fal-ai/wan-i2v"
PREFIX = "framecast"
PRESIGN_EXPIRES_S = 3600
# 480p 16:9 at the tiny profile's 1/8 scale.
EXPECTED_SIZE = (112, 64)


def job_arguments(image_url: str, seed: int) -> dict[str, Any]:
    return {"prompt": "a cat", "image_url": image_url, "resolution": "480p", "aspect_ratio": "16:9",
            "num_inference_steps": 2, "seed": seed}  # fmt: skip


def download_video(url: str) -> tuple[bytes, int, tuple[int, int]]:
    """(bytes, frames, size) of an MP4 fetched straight from its URL, as a browser would."""
    response = httpx.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(response.content)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return response.content, frames, (stream.codec_context.width, stream.codec_context.height)


@pytest.fixture
def s3_framecast(
    tmp_path: Path,
    certificates: tuple[Path, Path, Path],
    tiny_models: Path,
    s3_bucket: S3Bucket,
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    # Credentials through boto3's standard chain (the AWS environment), as a deployment would give them.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_bucket.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_bucket.secret_access_key)
    server = FramecastServer(
        data_dir=new_data_dir(tmp_path, tiny_models),
        certificates=certificates,
        extra_arguments=[
            "--storage", f"s3://{s3_bucket.name}/{PREFIX}",
            "--s3-endpoint-url", s3_bucket.endpoint_url,
            "--s3-region", s3_bucket.region,
            "--s3-presign-expires-s", str(PRESIGN_EXPIRES_S),
            # Our own upload URLs are loopback (moto): without this they are usable only if read from the bucket.
            "--no-allow-private-fetch",
        ],
    )  # fmt: skip
    server.start()
    yield server
    server.stop()


def test_results_and_uploads_live_in_the_bucket(s3_framecast: FramecastServer, s3_bucket: S3Bucket) -> None:
    server = s3_framecast
    objects_url = f"{s3_bucket.endpoint_url}/{s3_bucket.name}/{PREFIX}/"

    # An upload through fal's storage protocol lands in the bucket, and its file URL is accepted as an input.
    with server.client() as client:
        initiate = "/storage/upload/initiate?storage_type=fal-cdn-v3"
        ticket = client.post(initiate, json={"content_type": "image/png", "file_name": "cat.png"}).json()
        png = base64.b64decode(png_data_uri(96, 64, (30, 120, 200)).split(",", 1)[1])
        put = client.put(ticket["upload_url"], content=png, headers={"Authorization": "", "Content-Type": "image/png"})
        assert put.status_code == 200, put.text
        assert ticket["file_url"].startswith(objects_url + "uploads/")
        upload_key = f"{PREFIX}/{urlsplit(ticket['file_url']).path.split(f'/{PREFIX}/', 1)[1]}"
        assert upload_key in s3_bucket.object_keys()
        assert httpx.get(ticket["file_url"]).content == png
        submitted = client.post(f"/queue/{ENDPOINT}", json=job_arguments(ticket["file_url"], seed=5))
        assert submitted.status_code == 200, (submitted.text, ticket)
        uploaded_job = submitted.json()["request_id"]

    # A job through the unmodified fal-client: its video is a presigned bucket URL that plays.
    [entry] = run_with_fal_client(server, [{"endpoint": ENDPOINT, "arguments": job_arguments(png_data_uri(), 1)}])
    assert "error" not in entry, entry
    url = entry["result"]["video"]["url"]
    assert url.startswith(objects_url + "outputs/")
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == [str(PRESIGN_EXPIRES_S)]
    video, frames, size = download_video(url)
    assert (frames, size) == (81, EXPECTED_SIZE)

    with server.client() as client:
        # Every read signs afresh (SigV4 dates are in whole seconds): a later read gives another URL; both work.
        def fresh_url() -> str | None:
            response = client.get(f"/queue/{ENDPOINT}/requests/{entry['request_id']}")
            assert response.status_code == 200, response.text
            value: str = response.json()["video"]["url"]
            return value if value != url else None

        later: str = wait_for(fresh_url, timeout_s=10, what="a freshly signed URL")
        assert later.split("?")[0] == url.split("?")[0]
        assert download_video(later)[0] == video
        # The API's /files/<key> sends the browser to the bucket.
        key = urlsplit(url).path.split(f"/{PREFIX}/", 1)[1]
        redirect = client.get(f"/files/{key}")
        assert redirect.status_code == 307 and redirect.headers["location"].startswith(objects_url + key + "?")

        def uploaded_job_done() -> bool:
            status = client.get(f"/queue/{ENDPOINT}/requests/{uploaded_job}/status").json()
            return bool(status["status"] == "COMPLETED")

        wait_for(uploaded_job_done, timeout_s=120, what="the job on the uploaded image")
        uploaded_result = client.get(f"/queue/{ENDPOINT}/requests/{uploaded_job}").json()
    assert download_video(uploaded_result["video"]["url"])[1] == 81

    keys = s3_bucket.object_keys()
    assert any(key.startswith(f"{PREFIX}/inputs/{uploaded_job}/") for key in keys), keys
    assert sum(key.startswith(f"{PREFIX}/outputs/") for key in keys) == 2, keys
    files_dir = server.data_dir / "files"
    assert not files_dir.exists() or not any(path.is_file() for path in files_dir.rglob("*"))
    assert s3_bucket.secret_access_key not in server.log_text()
