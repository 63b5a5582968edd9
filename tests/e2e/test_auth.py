"""API keys on a real server: the fal client with a good, a wrong and a revoked key; --no-auth; the first key."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from tests.e2e.conftest import new_data_dir, png_data_uri
from tests.e2e.server import FramecastServer

pytestmark = pytest.mark.e2e

ENDPOINT = "fal-ai/wan-i2v"


def status_of(fal: ModuleType, key: str) -> int:
    """What an unmodified fal client with `key` gets for a submit (200, or the HTTP error code)."""
    client = fal.SyncClient(key=key)
    try:
        client.submit(ENDPOINT, arguments={"prompt": "p", "image_url": png_data_uri(), "num_inference_steps": 2})
    except fal.client.FalClientHTTPError as error:
        return int(error.status_code)
    return 200


def test_a_wrong_or_revoked_key_gets_401_at_once(fal: ModuleType, server: FramecastServer) -> None:
    assert server.api_key is not None
    assert status_of(fal, server.api_key) == 200
    assert status_of(fal, "fc_000000000000:wrong") == 401
    assert status_of(fal, "not-even-a-key") == 401
    temporary = server.create_api_key("temporary")
    assert status_of(fal, temporary) == 200
    subprocess.run(
        [sys.executable, "-m", "framecast", "keys", "revoke", "temporary", "--data-dir", str(server.data_dir)],
        check=True,
        capture_output=True,
    )
    assert status_of(fal, temporary) == 401
    with server.client(authenticated=False) as client:
        response = client.get(f"/queue/{ENDPOINT}/requests/00000000-0000-0000-0000-000000000000/status")
        assert response.status_code == 401 and response.json()["detail"].startswith("Missing API key")
        # Public: health, the catalogue, the OpenAPI document and the webhook keys.
        for path in ("/health", "/models", "/openapi.json", "/.well-known/jwks.json"):
            assert client.get(path).status_code == 200, path


@pytest.fixture
def bare_server(
    tmp_path: Path, certificates: tuple[Path, Path, Path], tiny_models: Path, request: pytest.FixtureRequest
) -> Iterator[FramecastServer]:
    instance = FramecastServer(
        data_dir=new_data_dir(tmp_path, tiny_models),
        certificates=certificates,
        workers=0,
        extra_arguments=list(request.param),
        create_key=False,
    )
    instance.start()
    yield instance
    instance.stop()


@pytest.mark.parametrize("bare_server", [["--no-auth"]], indirect=True)
def test_no_auth_is_announced_and_lets_anyone_in(bare_server: FramecastServer) -> None:
    assert "NO API KEY IS CHECKED" in bare_server.log_text()
    with bare_server.client(authenticated=False) as client:
        response = client.post(f"/queue/{ENDPOINT}", json={"prompt": "p", "image_url": png_data_uri()})
    # Past the key check; no worker runs here, so the queue says why it cannot take the job.
    assert response.status_code == 503 and response.json()["error_type"] == "runner_scheduling_failure"


@pytest.mark.parametrize("bare_server", [[]], indirect=True)
def test_the_first_start_makes_and_shows_one_key(bare_server: FramecastServer) -> None:
    log = bare_server.log_text()
    assert "No API key existed, so this one was made (initial)" in log
    key = next(line.strip() for line in log.splitlines() if line.strip().startswith("fc_"))
    with httpx.Client(base_url=bare_server.url, verify=str(bare_server.ca_path)) as client:
        accepted = client.post(f"/queue/{ENDPOINT}", json={"prompt": "p"}, headers={"Authorization": f"Bearer {key}"})
        assert accepted.status_code == 422, "past the key check, to validation"
    bare_server.stop()
    bare_server.start()
    assert bare_server.log_text().count("No API key existed") == 1, "only when there is no key at all"
