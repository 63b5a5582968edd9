"""Every open-model endpoint through the unmodified fal-client, on `framecast serve --models tiny`.

Each job runs the real engine (tiny random weights) and returns a real MP4, so the
frame counts, frame rates and metadata checked here are what a user gets.
"""

from __future__ import annotations

import io
import re
from types import ModuleType
from typing import Any

import av
import pytest
from PIL import Image

from tests.e2e.server import FramecastServer, wait_for

pytestmark = pytest.mark.e2e


def image_uri(fal: ModuleType, color: tuple[int, int, int] = (30, 120, 200)) -> str:
    return str(fal.encode_image(Image.new("RGB", (96, 64), color), format="png"))


def decode(server: FramecastServer, url: str) -> tuple[int, float]:
    """(frames, frames per second) of the MP4 at `url`."""
    with server.client() as client:
        response = client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(response.content)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames, float(stream.average_rate or 0)


# endpoint -> (arguments without images, image fields, engine, tiny model, frames, fps)
OPEN_ENDPOINTS: dict[str, tuple[dict[str, Any], tuple[str, ...], str, str, int, int]] = {
    "fal-ai/framepack": (
        {"prompt": "a cat", "num_frames": 20, "resolution": "480p", "seed": 3},
        ("image_url",),
        "diffusers-framepack",
        "framepack",
        20,
        30,
    ),
    "fal-ai/framepack/f1": (
        {"prompt": "a cat", "num_frames": 20, "resolution": "480p", "seed": 3},
        ("image_url",),
        "diffusers-framepack-f1",
        "framepack",
        20,
        30,
    ),
    "fal-ai/framepack/flf2v": (
        {"prompt": "a cat", "num_frames": 20, "resolution": "480p", "strength": 0.5},
        ("image_url", "end_image_url"),
        "diffusers-framepack",
        "framepack",
        20,
        30,
    ),
    "wavespeed-ai/framepack": (
        {"prompt": "a cat", "num_frames": 30, "resolution": "480p", "num_inference_steps": 4},
        ("image",),
        "diffusers-framepack",
        "framepack",
        30,
        30,
    ),
    "fal-ai/stable-video": ({"fps": 10, "seed": 1}, ("image_url",), "diffusers-svd", "svd", 25, 10),
    "fal-ai/wan-i2v": (
        {"prompt": "a cat", "resolution": "480p", "num_inference_steps": 2, "frames_per_second": 16},
        ("image_url",),
        "diffusers-wan-i2v",
        "wan21_i2v",
        81,
        16,
    ),
    "fal-ai/wan-flf2v": (
        {"prompt": "a cat", "resolution": "480p", "num_inference_steps": 2, "num_frames": 85},
        ("start_image_url", "end_image_url"),
        "diffusers-wan-i2v",
        "wan21_flf2v",
        85,
        16,
    ),
    "fal-ai/wan-pro/image-to-video": (
        {"prompt": "a cat", "seed": 9},
        ("image_url",),
        "diffusers-wan-i2v",
        "wan22_i2v_a14b",
        180,
        30,
    ),
    "fal-ai/magi-distilled/image-to-video": (
        {"prompt": "a cat", "num_frames": 96, "resolution": "480p", "num_inference_steps": "4"},
        ("image_url",),
        "diffusers-skyreels-df",
        "skyreels_v2_df",
        96,
        24,
    ),
}


@pytest.mark.parametrize("endpoint_id", sorted(OPEN_ENDPOINTS))
def test_every_open_endpoint_makes_its_video(fal: ModuleType, server: FramecastServer, endpoint_id: str) -> None:
    arguments, image_fields, engine, model, frames, fps = OPEN_ENDPOINTS[endpoint_id]
    colors = [(30, 120, 200), (200, 60, 20)]
    arguments = {**arguments, **{name: image_uri(fal, colors[i]) for i, name in enumerate(image_fields)}}
    handle = fal.submit(endpoint_id, arguments=arguments)
    result = handle.get()
    assert result["video"]["content_type"] == "video/mp4"
    assert decode(server, result["video"]["url"]) == (frames, fps)
    metadata = result["metadata"]
    assert metadata["engine"] == engine
    assert metadata["model"].endswith(f"/models/tiny/{model}")
    assert metadata["seed"] == arguments.get("seed", metadata["seed"])
    if "seed" in arguments:
        assert result.get("seed", metadata["seed"]) == arguments["seed"]


def test_framepack_previews_each_section_and_keeps_it_on_cancel(fal: ModuleType, server: FramecastServer) -> None:
    endpoint = "fal-ai/framepack"
    arguments = {"prompt": "a cat", "image_url": image_uri(fal), "num_frames": 40, "resolution": "480p", "seed": 1}
    # 40 frames are two sections of 25 steps; hold at the first step of the second one.
    handle = fal.submit(endpoint, arguments=arguments, headers={"X-Framecast-Test-Fault": "block_at_step=26"})

    def holding() -> Any:
        status = fal.status(endpoint, handle.request_id, with_logs=True)
        logs = getattr(status, "logs", None) or []
        return status if any("holding at step 26" in log["message"] for log in logs) else None

    status = wait_for(holding, timeout_s=120, what="the job to hold in its second section")
    preview_lines = [log["message"] for log in status.logs if "preview:" in log["message"]]
    assert len(preview_lines) == 1 and preview_lines[0].startswith("Section 1/2 done: 33 frames")
    preview_url = re.search(r"preview: (\S+)", preview_lines[0])
    assert preview_url is not None and preview_url.group(1).startswith(server.url + "/files/")
    assert decode(server, preview_url.group(1)) == (33, 30)
    with server.client() as client:
        progress = client.get(f"/queue/fal-ai/framepack/requests/{handle.request_id}/status").json()["progress"]
    assert progress["preview"]["url"] == preview_url.group(1)
    assert (progress["preview"]["section"], progress["preview"]["sections"]) == (1, 2)

    handle.cancel()
    done = wait_for(
        lambda: (s := fal.status(endpoint, handle.request_id, with_logs=True)) and isinstance(s, fal.Completed) and s,
        timeout_s=60,
        what="the cancel",
    )
    assert done.error_type == "client_cancelled"
    with server.client() as client:
        response = client.get(f"/queue/fal-ai/framepack/requests/{handle.request_id}")
    assert response.status_code == 499
    body = response.json()
    assert "33 frames finished before the cancel" in body["detail"]
    assert body["partial_output"]["num_frames"] == 33
    assert body["partial_output"]["placement"] == "end"
    assert decode(server, body["partial_output"]["video"]["url"]) == (33, 30)


def test_safety_checker_request_without_a_checker_says_nothing_was_checked(fal: ModuleType) -> None:
    arguments = {"prompt": "a cat", "image_url": image_uri(fal), "num_frames": 9, "enable_safety_checker": True}
    handle = fal.submit("fal-ai/framepack", arguments=arguments)
    handle.get()
    status = fal.status("fal-ai/framepack", handle.request_id, with_logs=True)
    warnings = [log for log in status.logs if "NOT checked" in log["message"]]
    assert len(warnings) == 1 and warnings[0]["level"] == "WARN"
