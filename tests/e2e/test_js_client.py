"""The unmodified `@fal-ai/client` (npm, Node) against a real `framecast serve --models tiny` over TLS.

tests/js/exercise.mjs runs every scenario once per way of pointing the client at us (protocol.md §8.2):
`middleware` rewrites fal's URLs onto our routes, `proxy` sends everything to /api/fal/proxy with the
real URL in `x-fal-target-url`. It prints what the client returned and where each HTTP call went.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from framecast.api.proxy import PROXY_PATH, route_target
from tests.e2e.server import FramecastServer
from tests.e2e.test_fal_client import EXPECTED_SIZE, decode_video

pytestmark = pytest.mark.e2e

JS_DIR = Path(__file__).resolve().parents[1] / "js"
FAL_JS_VERSION = "1.10.1"
NODE_TIMEOUT_S = 240
STATUS_ORDER = ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
SCENARIOS = ["subscribePolling", "subscribeStreaming", "queue", "cancel", "run", "storageUpload", "blobInInput"]


@pytest.fixture(scope="session")
def exercise_script() -> Path:
    """tests/js with its pinned @fal-ai/client installed (`npm ci` when node_modules is missing)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed for the @fal-ai/client tests (Node.js >= 18)")
    package = JS_DIR / "node_modules" / "@fal-ai" / "client" / "package.json"
    if not package.exists():
        installed = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, capture_output=True, text=True, timeout=300
        )
        if installed.returncode != 0:
            pytest.fail(f"`npm ci` in {JS_DIR} failed ({installed.returncode}):\n{installed.stdout}{installed.stderr}")
    assert json.loads(package.read_text())["version"] == FAL_JS_VERSION
    return JS_DIR / "exercise.mjs"


@pytest.fixture(scope="module")
def image_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("js-input") / "image.png"
    Image.new("RGB", (96, 64), (30, 120, 200)).save(path)
    return path


@pytest.fixture(scope="module", params=["middleware", "proxy"])
def results(
    request: pytest.FixtureRequest, exercise_script: Path, server: FramecastServer, image_png: Path
) -> dict[str, Any]:
    assert server.api_key, "the server must be started with an API key"
    environment = {**os.environ, "NODE_EXTRA_CA_CERTS": str(server.ca_path), "FRAMECAST_API_KEY": server.api_key}
    completed = subprocess.run(
        ["node", str(exercise_script), request.param, server.url, str(image_png)],
        cwd=JS_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
    )
    assert completed.returncode == 0, f"node exited with {completed.returncode}:\n{completed.stderr}"
    output: dict[str, Any] = json.loads(completed.stdout)
    assert output["mode"] == request.param
    return output


def scenario(results: dict[str, Any], name: str) -> dict[str, Any]:
    entry: dict[str, Any] = results[name]
    assert "error" not in entry, f"{name} ({results['mode']}) threw {entry['error']}"
    return entry


def route(server: FramecastServer, call: dict[str, Any]) -> str:
    """'METHOD /path?query' that a recorded call reached on our server, whichever mode sent it."""
    assert call["url"].startswith(server.url + "/"), f"{call} did not go to our server"
    if call["target"] is None:
        return f"{call['method']} {call['url'].removeprefix(server.url)}"
    assert call["url"] == server.url + PROXY_PATH
    mapped = route_target(call["target"])
    assert mapped is not None, call
    path, query = mapped
    return f"{call['method']} {path}" + (f"?{query}" if query else "")


def statuses(updates: list[dict[str, Any]]) -> list[str]:
    seen = [update["status"] for update in updates]
    positions = [STATUS_ORDER.index(status) for status in seen]
    assert positions == sorted(positions), f"status went backwards: {seen}"
    return seen


def assert_video(server: FramecastServer, result: dict[str, Any], *, seed: int) -> None:
    data = result["data"]
    assert data["seed"] == seed
    assert data["video"]["content_type"] == "video/mp4"
    assert data["video"]["url"].startswith(f"{server.url}/files/outputs/")
    frames, width, height, codec = decode_video(server, data["video"]["url"])
    assert (frames, (width, height), codec) == (81, EXPECTED_SIZE, "h264")


def test_every_call_reaches_our_server_the_way_its_mode_says(results: dict[str, Any], server: FramecastServer) -> None:
    hosts: set[str] = set()
    for name in SCENARIOS:
        for call in results[name]["calls"]:
            route(server, call)
            if results["mode"] == "middleware":
                assert call["target"] is None
            elif call["target"] is None:
                # Only the upload's PUT bypasses the proxy: the client sends it to `upload_url` with plain fetch.
                assert (name, call["method"]) in {("storageUpload", "PUT"), ("blobInInput", "PUT")}, call
            else:
                hosts.add(call["target"].split("/")[2])
    if results["mode"] == "proxy":
        assert hosts == {"queue.fal.run", "fal.run", "rest.fal.ai"}


def test_subscribe_polls_with_logs_and_queue_updates(results: dict[str, Any], server: FramecastServer) -> None:
    entry = scenario(results, "subscribePolling")
    request_id = entry["enqueued"]
    assert entry["result"]["requestId"] == request_id
    seen = statuses(entry["updates"])
    assert seen[-1] == "COMPLETED"
    assert "IN_PROGRESS" in seen
    final = entry["updates"][-1]
    assert final["request_id"] == request_id
    assert (final["error"], final["metrics"]["inference_time"] > 0) == (None, True)
    messages = [log["message"] for update in entry["updates"] for log in update.get("logs") or []]
    assert any(message.startswith("Step 1/2") for message in messages)
    assert any(message.startswith("Step 2/2") for message in messages)

    base = f"/queue/fal-ai/wan-i2v/requests/{request_id}"
    routes = [route(server, call) for call in entry["calls"]]
    assert routes[0] == "POST /queue/fal-ai/wan-i2v"
    assert set(routes[1:-1]) == {f"GET {base}/status?logs=1"}
    assert len(routes[1:-1]) == len(entry["updates"])
    assert routes[-1] == f"GET {base}"
    assert_video(server, entry["result"], seed=11)


def test_subscribe_streaming_reads_the_sse_status_stream(results: dict[str, Any], server: FramecastServer) -> None:
    entry = scenario(results, "subscribeStreaming")
    request_id = entry["enqueued"]
    assert entry["result"]["requestId"] == request_id
    seen = statuses(entry["updates"])
    assert seen[-1] == "COMPLETED"
    assert "IN_PROGRESS" in seen
    base = f"/queue/fal-ai/wan-i2v/requests/{request_id}"
    assert [route(server, call) for call in entry["calls"]] == [
        "POST /queue/fal-ai/wan-i2v",
        f"GET {base}/status/stream?logs=1",
        f"GET {base}",
    ]
    assert_video(server, entry["result"], seed=12)


def test_queue_submit_status_result(results: dict[str, Any], server: FramecastServer) -> None:
    entry = scenario(results, "queue")
    submitted = entry["submitted"]
    request_id = submitted["request_id"]
    base = f"{server.url}/queue/fal-ai/wan-i2v/requests/{request_id}"
    assert (submitted["status"], submitted["response_url"], submitted["status_url"], submitted["cancel_url"]) == (
        "IN_QUEUE",
        base,
        base + "/status",
        base + "/cancel",
    )
    assert entry["firstStatus"]["request_id"] == request_id
    assert entry["firstStatus"]["status"] in STATUS_ORDER
    final = entry["finalStatus"]
    assert (final["status"], final["error"], final["error_type"]) == ("COMPLETED", None, None)
    assert entry["result"]["requestId"] == request_id
    assert_video(server, entry["result"], seed=13)


def test_cancel_a_running_job(results: dict[str, Any], server: FramecastServer) -> None:
    entry = scenario(results, "cancel")
    request_id = entry["requestId"]
    assert entry["cancel"] == "sent"
    final = entry["finalStatus"]
    assert (final["status"], final["error_type"]) == ("COMPLETED", "client_cancelled")
    assert any("Cancellation requested" in log["message"] for log in final["logs"])
    result_error = entry["result"]["error"]
    assert (result_error["status"], result_error["body"]["error_type"]) == (499, "client_cancelled")
    again = entry["cancelAgain"]["error"]
    assert (again["status"], again["body"]) == (400, {"status": "ALREADY_COMPLETED"})
    cancels = [route(server, call) for call in entry["calls"] if call["method"] == "PUT"]
    assert cancels == [f"PUT /queue/fal-ai/wan-i2v/requests/{request_id}/cancel"] * 2


def test_run_waits_for_the_video(results: dict[str, Any], server: FramecastServer) -> None:
    entry = scenario(results, "run")
    assert [route(server, call) for call in entry["calls"]] == ["POST /run/fal-ai/wan-i2v"]
    assert_video(server, entry["result"], seed=15)
    request_id = entry["result"]["requestId"]
    with server.client() as client:
        status = client.get(f"/queue/fal-ai/wan-i2v/requests/{request_id}/status")
    assert (status.status_code, status.json()["status"]) == (200, "COMPLETED")


def test_storage_upload_gives_a_url_the_queue_accepts(
    results: dict[str, Any], server: FramecastServer, image_png: Path
) -> None:
    entry = scenario(results, "storageUpload")
    file_url = entry["fileUrl"]
    assert file_url.startswith(f"{server.url}/files/uploads/")
    routes = [route(server, call) for call in entry["calls"]]
    assert routes[0] == "POST /storage/upload/initiate?storage_type=fal-cdn-v3"
    assert routes[1].startswith("PUT /")
    assert routes[2:] == ["POST /run/fal-ai/wan-i2v"]
    assert entry["calls"][2]["image_url"] == file_url
    with server.client() as client:
        assert client.get(file_url).content == image_png.read_bytes()
    assert_video(server, entry["result"], seed=16)


def test_blob_in_input_is_uploaded_first(results: dict[str, Any], server: FramecastServer) -> None:
    entry = scenario(results, "blobInInput")
    routes = [route(server, call) for call in entry["calls"]]
    assert routes[0] == "POST /storage/upload/initiate?storage_type=fal-cdn-v3"
    assert routes[1].startswith("PUT /")
    assert routes[2] == "POST /queue/fal-ai/wan-i2v"
    assert entry["calls"][2]["image_url"].startswith(f"{server.url}/files/uploads/")
    assert_video(server, entry["result"], seed=17)
