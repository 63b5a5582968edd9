"""The unmodified fal-client (PyPI) against a real `framecast serve --models tiny` over TLS."""

from __future__ import annotations

import io
import json
from types import ModuleType
from typing import Any

import av
import pytest
from PIL import Image

from tests.e2e.conftest import png_data_uri
from tests.e2e.server import FramecastServer, wait_for

pytestmark = pytest.mark.e2e

ENDPOINT = "fal-ai/wan-i2v"
# 480p 16:9 is 832x480; the tiny profile renders at 1/8 scale, rounded to multiples of 16.
EXPECTED_SIZE = (112, 64)


def wan_input(fal: ModuleType, **overrides: Any) -> dict[str, Any]:
    image = Image.new("RGB", (96, 64), (30, 120, 200))
    arguments: dict[str, Any] = {
        "prompt": "a cat walking in the snow",
        "image_url": fal.encode_image(image, format="png"),
        "resolution": "480p",
        "aspect_ratio": "16:9",
        "num_inference_steps": 2,
        "seed": 1234,
    }
    arguments.update(overrides)
    return arguments


def block_header(step: int = 1) -> dict[str, str]:
    return {"X-Framecast-Test-Fault": f"block_at_step={step}"}


def decode_video(server: FramecastServer, url: str) -> tuple[int, int, int, str]:
    with server.client() as client:
        response = client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(response.content)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames, stream.codec_context.width, stream.codec_context.height, stream.codec_context.name


def wait_status(fal: ModuleType, request_id: str, kind: type, *, timeout_s: float = 60, logs: bool = True) -> Any:
    def check() -> Any:
        status = fal.status(ENDPOINT, request_id, with_logs=logs)
        return status if isinstance(status, kind) else None

    return wait_for(check, timeout_s=timeout_s, what=f"{request_id} to be {kind.__name__}")


def wait_holding(fal: ModuleType, request_id: str) -> None:
    """Wait until a job with a block fault is running and held at its step."""

    def holding() -> bool:
        status = fal.status(ENDPOINT, request_id, with_logs=True)
        return isinstance(status, fal.InProgress) and any("holding" in log["message"] for log in status.logs or [])

    wait_for(holding, timeout_s=60, what=f"{request_id} to hold at its step")


def test_subscribe_with_logs_and_queue_updates(fal: ModuleType, server: FramecastServer) -> None:
    updates: list[Any] = []
    enqueued: list[str] = []
    result = fal.subscribe(
        ENDPOINT,
        arguments=wan_input(fal),
        with_logs=True,
        on_enqueue=enqueued.append,
        on_queue_update=updates.append,
    )
    assert len(enqueued) == 1
    assert isinstance(updates[-1], fal.Completed)
    assert updates[-1].error is None
    assert updates[-1].metrics["inference_time"] > 0
    messages = [log["message"] for update in updates if getattr(update, "logs", None) for log in update.logs]
    assert any(message.startswith("Step 1/2") for message in messages)
    assert any(message.startswith("Step 2/2") for message in messages)
    for update in updates:
        for log in getattr(update, "logs", None) or []:
            assert set(log) == {"message", "level", "source", "timestamp"}

    assert result["seed"] == 1234
    video = result["video"]
    assert video["content_type"] == "video/mp4"
    assert video["url"].startswith(f"https://localhost:{server.port}/files/outputs/")
    assert video["file_name"].endswith(".mp4")
    assert result["metadata"]["engine"] == "diffusers-wan-i2v"
    frames, width, height, codec = decode_video(server, video["url"])
    assert (frames, (width, height), codec) == (81, EXPECTED_SIZE, "h264")
    assert video["file_size"] > 0


def test_submit_status_result_with_data_uri(fal: ModuleType, server: FramecastServer) -> None:
    handle = fal.submit(ENDPOINT, arguments=wan_input(fal, image_url=png_data_uri(), num_frames=83, seed=None))
    queue_base = f"https://localhost:{server.port}/queue/fal-ai/wan-i2v/requests/{handle.request_id}"
    assert handle.response_url == queue_base
    assert handle.status_url == queue_base + "/status"
    assert handle.cancel_url == queue_base + "/cancel"
    first = handle.status(with_logs=True)
    assert isinstance(first, (fal.Queued, fal.InProgress, fal.Completed))
    wait_status(fal, handle.request_id, fal.Completed)
    result = fal.result(ENDPOINT, handle.request_id)
    assert isinstance(result["seed"], int)
    frames, width, height, _ = decode_video(server, result["video"]["url"])
    assert (frames, (width, height)) == (83, EXPECTED_SIZE)


def test_sync_run(fal: ModuleType) -> None:
    result = fal.run(ENDPOINT, arguments=wan_input(fal, seed=7))
    assert result["seed"] == 7
    assert result["video"]["url"].endswith(".mp4")


def test_same_seed_same_video(fal: ModuleType, server: FramecastServer) -> None:
    first = fal.run(ENDPOINT, arguments=wan_input(fal, seed=99))
    second = fal.run(ENDPOINT, arguments=wan_input(fal, seed=99))
    with server.client() as client:
        assert client.get(first["video"]["url"]).content == client.get(second["video"]["url"]).content


def test_422_at_submit_names_every_bad_field(fal: ModuleType) -> None:
    with pytest.raises(fal.FalClientHTTPError) as caught:
        fal.submit(ENDPOINT, arguments={"image_url": "data:image/png;base64,AAAA", "num_frames": 10})
    assert caught.value.status_code == 422
    fields = {tuple(entry["loc"]) for entry in caught.value.message}
    assert ("body", "prompt") in fields
    assert ("body", "num_frames") in fields

    with pytest.raises(fal.FalClientHTTPError) as caught:
        fal.submit(ENDPOINT, arguments=wan_input(fal, image_url="data:image/png;base64,bm90IGFuIGltYWdl"))
    assert caught.value.status_code == 422
    assert [entry["loc"] for entry in caught.value.message] == [["body", "image_url"]]

    with pytest.raises(fal.FalClientHTTPError) as caught:
        fal.submit(ENDPOINT, arguments=wan_input(fal, image_url="file:///etc/passwd"))
    assert caught.value.status_code == 422
    assert caught.value.message[0]["loc"] == ["body", "image_url"]


def test_failure_inside_the_engine(fal: ModuleType, server: FramecastServer) -> None:
    handle = fal.submit(ENDPOINT, arguments=wan_input(fal), headers={"X-Framecast-Test-Fault": "raise_at_step=1"})
    completed = wait_status(fal, handle.request_id, fal.Completed)
    assert completed.error == "Injected test fault at step 1"
    assert completed.error_type == "internal_server_error"
    with pytest.raises(fal.FalClientHTTPError) as caught:
        handle.get()
    assert caught.value.status_code == 500
    assert caught.value.message == "Injected test fault at step 1"
    # The worker survives and serves the next job.
    assert fal.run(ENDPOINT, arguments=wan_input(fal))["video"]["url"]


def test_cancel_queued_and_running_jobs(fal: ModuleType, server: FramecastServer) -> None:
    blocker = fal.submit(ENDPOINT, arguments=wan_input(fal), headers=block_header())
    wait_holding(fal, blocker.request_id)
    queued = fal.submit(ENDPOINT, arguments=wan_input(fal))
    assert isinstance(queued.status(), fal.Queued)

    queued.cancel()
    done = wait_status(fal, queued.request_id, fal.Completed, timeout_s=10)
    assert done.error_type == "client_cancelled"
    with pytest.raises(fal.FalClientHTTPError) as caught:
        queued.get()
    assert caught.value.status_code == 499

    blocker.cancel()
    done = wait_status(fal, blocker.request_id, fal.Completed, timeout_s=20)
    assert done.error_type == "client_cancelled"
    assert any("Cancellation requested" in log["message"] for log in done.logs)

    with pytest.raises(fal.FalClientHTTPError) as caught:
        blocker.cancel()
    assert caught.value.status_code == 400
    assert json.loads(caught.value.message) == {"status": "ALREADY_COMPLETED"}

    with server.client() as client:
        missing = client.put("/queue/fal-ai/wan-i2v/requests/00000000-0000-0000-0000-000000000000/cancel")
    assert (missing.status_code, missing.json()) == (404, {"status": "NOT_FOUND"})


def test_priority_orders_the_queue(fal: ModuleType, server: FramecastServer) -> None:
    blocker = fal.submit(ENDPOINT, arguments=wan_input(fal), headers=block_header())
    wait_holding(fal, blocker.request_id)
    low = fal.submit(ENDPOINT, arguments=wan_input(fal), priority="low")
    normal = fal.submit(ENDPOINT, arguments=wan_input(fal), priority="normal")
    low_status, normal_status = low.status(), normal.status()
    assert isinstance(low_status, fal.Queued) and isinstance(normal_status, fal.Queued)
    assert (normal_status.position, low_status.position) == (0, 1)

    blocker.cancel()
    normal_done = wait_status(fal, normal.request_id, fal.Completed)
    low_done = wait_status(fal, low.request_id, fal.Completed)
    normal_finished = max(log["timestamp"] for log in normal_done.logs)
    low_started = min(log["timestamp"] for log in low_done.logs if log["message"].startswith("Started on worker"))
    assert low_started >= normal_finished


def test_start_timeout_gives_504_user(fal: ModuleType, server: FramecastServer) -> None:
    blocker = fal.submit(ENDPOINT, arguments=wan_input(fal), headers=block_header())
    wait_holding(fal, blocker.request_id)
    late = fal.submit(ENDPOINT, arguments=wan_input(fal), start_timeout=1.5)
    done = wait_status(fal, late.request_id, fal.Completed, timeout_s=30)
    assert done.error_type == "request_timeout"
    with pytest.raises(fal.FalClientHTTPError) as caught:
        late.get()
    assert caught.value.status_code == 504
    assert caught.value.response_headers["x-fal-request-timeout-type"] == "user"
    blocker.cancel()
    wait_status(fal, blocker.request_id, fal.Completed)


def test_sse_status_stream(fal: ModuleType, server: FramecastServer) -> None:
    handle = fal.submit(ENDPOINT, arguments=wan_input(fal), headers=block_header(2))
    events: list[dict[str, Any]] = []
    keepalives = 0
    cancelled = False
    with (
        server.client() as client,
        client.stream(
            "GET",
            f"/queue/fal-ai/wan-i2v/requests/{handle.request_id}/status/stream",
            params={"logs": "1"},
            headers={"Accept": "application/json, text/event-stream"},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
            elif line.startswith(":"):
                keepalives += 1
                # Held at step 2 for good: only a cancel ends the stream. Cancel once step 1 was streamed
                # (the worker may take longer than one keep-alive period to get there on a busy machine).
                stepped = any(event.get("progress", {}).get("step", 0) >= 1 for event in events)
                if stepped and not cancelled:
                    handle.cancel()
                    cancelled = True
    statuses = [event["status"] for event in events]
    assert statuses[-1] == "COMPLETED"
    assert "IN_PROGRESS" in statuses
    assert statuses.index("IN_PROGRESS") < statuses.index("COMPLETED")
    assert keepalives >= 1
    assert events[-1]["error_type"] == "client_cancelled"
    in_progress = [event for event in events if event["status"] == "IN_PROGRESS"]
    assert any(event.get("progress", {}).get("step", 0) >= 1 for event in in_progress)


def test_output_supports_range_requests(fal: ModuleType, server: FramecastServer) -> None:
    result = fal.run(ENDPOINT, arguments=wan_input(fal))
    with server.client() as client:
        response = client.get(result["video"]["url"], headers={"Range": "bytes=0-99"})
        assert response.status_code == 206
        assert len(response.content) == 100
        assert response.headers["content-range"].startswith("bytes 0-99/")
        assert client.get("/files/outputs/../../framecast.db").status_code == 404


def test_http_errors_have_fal_shapes(server: FramecastServer) -> None:
    with server.client() as client:
        unknown = client.post("/queue/fal-ai/no-such-model", json={})
        assert unknown.status_code == 404 and "detail" in unknown.json()
        malformed = client.post(
            "/queue/fal-ai/wan-i2v", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert malformed.status_code == 422
        assert malformed.json()["detail"][0]["type"] == "json_invalid"
        bad_priority = client.post("/queue/fal-ai/wan-i2v", json={}, headers={"X-Fal-Queue-Priority": "urgent"})
        assert bad_priority.status_code == 400
        missing = client.get("/queue/fal-ai/wan-i2v/requests/nope/status")
        assert (missing.status_code, missing.headers["content-type"]) == (404, "application/json")
        logs_flag = client.get("/queue/fal-ai/wan-i2v/requests/nope/status", params={"logs": "maybe"})
        assert logs_flag.status_code in (400, 404)


def test_status_accepts_all_logs_flags(fal: ModuleType, server: FramecastServer) -> None:
    result_handle = fal.submit(ENDPOINT, arguments=wan_input(fal))
    wait_status(fal, result_handle.request_id, fal.Completed)
    url = f"/queue/fal-ai/wan-i2v/requests/{result_handle.request_id}/status"
    with server.client() as client:
        for flag, has_logs in (("1", True), ("true", True), ("0", False), ("false", False)):
            response = client.get(url, params={"logs": flag})
            assert response.status_code == 200
            assert (response.json()["logs"] is not None) is has_logs
        assert client.get(url, params={"logs": "maybe"}).status_code == 400


def test_api_process_never_imports_torch(server: FramecastServer) -> None:
    assert server.process is not None
    with open(f"/proc/{server.process.pid}/maps") as memory_map:
        assert "libtorch" not in memory_map.read()
