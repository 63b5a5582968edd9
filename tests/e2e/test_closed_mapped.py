"""Every closed endpoint mapped onto a local engine, through the unmodified fal-client, on `serve --models tiny`.

The tiny profile maps each closed endpoint (Veo 2, Kling, Seedance, Hailuo-02, PixVerse,
Luma) onto a tiny open engine. The video must last the asked duration at that engine's
own frame rate, the result's metadata and `/models` must name the engine and weights and
say the closed model was mapped, and every option the engine cannot honour must be a WARN
line in the job's logs. The shortest durations and smallest sizes each schema allows keep
the renders cheap.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import av
import pytest
from PIL import Image

from framecast.endpoints import build_catalogue
from tests.e2e.server import FramecastServer

pytestmark = pytest.mark.e2e

WAN_2_1_I2V = ("diffusers-wan-i2v", "wan21_i2v", 16)
WAN_2_2 = ("diffusers-wan-i2v", "wan22_i2v_a14b", 16)
FRAMEPACK = ("diffusers-framepack", "framepack", 30)
FRAMEPACK_F1 = ("diffusers-framepack-f1", "framepack", 30)
SVD = ("diffusers-svd", "svd", 7)
SKYREELS = ("diffusers-skyreels-df", "skyreels_v2_df", 24)
KLING_NEGATIVE_NOTE = "negative_prompt='blur, distort, and low quality': FramePack, as mapped, takes no negative prompt"


@dataclass(frozen=True)
class Mapped:
    """One closed endpoint's job and what the tiny profile's mapping must make of it."""

    arguments: dict[str, Any]
    images: tuple[str, ...]
    # (engine, tiny model, frames per second)
    engine: tuple[str, str, int]
    seconds: float
    # The start of every WARN line the job must log, and no other.
    warnings: tuple[str, ...] = ()


CLOSED: dict[str, Mapped] = {
    "fal-ai/veo2/image-to-video": Mapped(
        {"prompt": "a cat", "duration": "5s", "aspect_ratio": "16:9", "enhance_prompt": True},
        ("image_url",),
        SKYREELS,
        5,
        ("Ignored unknown input fields: enhance_prompt",),
    ),
    "fal-ai/kling-video/v2.1/standard/image-to-video": Mapped(
        {"prompt": "a cat", "duration": "5", "cfg_scale": 0.5}, ("image_url",), WAN_2_1_I2V, 5
    ),
    "fal-ai/kling-video/v2.1/pro/image-to-video": Mapped(
        {"prompt": "a cat", "duration": 5, "negative_prompt": "rain"}, ("image_url",), WAN_2_1_I2V, 5
    ),
    "fal-ai/kling-video/v2.1/master/image-to-video": Mapped(
        {"prompt": "a cat", "duration": "5", "cfg_scale": 1.0}, ("image_url",), WAN_2_2, 5
    ),
    "fal-ai/kling-video/v2/master/image-to-video": Mapped(
        {"prompt": "a cat", "duration": "5"},
        ("image_url",),
        SVD,
        5,
        (
            "prompt='a cat': Stable Video Diffusion takes no text prompt",
            "negative_prompt='blur, distort, and low quality': Stable Video Diffusion, as mapped, takes no negative",
        ),
    ),
    "fal-ai/kling-video/v1.6/pro/image-to-video": Mapped(
        {"prompt": "a cat", "duration": "5", "aspect_ratio": "9:16"}, ("image_url", "tail_image_url"), WAN_2_2, 5
    ),
    "fal-ai/kling-video/v1.5/pro/image-to-video": Mapped(
        {"prompt": "a cat", "duration": "5", "static_mask_url": "https://example.com/mask.png"},
        ("image_url", "tail_image_url"),
        FRAMEPACK,
        5,
        ("static_mask_url='…': motion brushes are not supported", KLING_NEGATIVE_NOTE),
    ),
    "fal-ai/kling-video/v1/standard/image-to-video": Mapped(
        {
            "prompt": "a cat",
            "duration": "5",
            "dynamic_masks": [{"mask_url": "https://example.com/mask.png", "trajectories": [{"x": 1, "y": 2}]}],
        },
        ("image_url", "tail_image_url"),
        WAN_2_2,
        5,
        ("dynamic_masks='1 masks': motion brushes are not supported",),
    ),
    "fal-ai/bytedance/seedance/v1/lite/image-to-video": Mapped(
        {"prompt": "a cat", "duration": "2", "resolution": "480p", "camera_fixed": True, "seed": 5},
        ("image_url", "end_image_url"),
        WAN_2_2,
        2,
        (
            "camera_fixed=True: the engine has no camera lock",
            "enable_safety_checker=true, but this server has no safety checker configured",
        ),
    ),
    "fal-ai/minimax/hailuo-02/pro/image-to-video": Mapped(
        {"prompt": "a cat"},
        ("image_url", "end_image_url"),
        WAN_2_2,
        6,  # Hailuo-02 Pro always makes 6 s
        ("prompt_optimizer=True: no prompt optimizer is configured",),
    ),
    "fal-ai/pixverse/v4.5/image-to-video": Mapped(
        {"prompt": "a cat", "duration": "5", "resolution": "360p", "style": "anime", "camera_movement": "zoom_in"},
        ("image_url",),
        FRAMEPACK_F1,
        5,
        ("style='anime': styles are not supported", "camera_movement='zoom_in': not supported"),
    ),
    "fal-ai/pixverse/v4.5/transition": Mapped(
        {"prompt": "a cat", "duration": "5", "resolution": "360p", "aspect_ratio": "1:1"},
        ("first_image_url", "end_image_url"),
        FRAMEPACK,
        5,
    ),
    "fal-ai/luma-dream-machine/ray-2-flash/image-to-video": Mapped(
        {"prompt": "a cat", "duration": "5s", "loop": True},
        ("image_url", "end_image_url"),
        FRAMEPACK,
        5,
        ("loop=True: loop blending is not supported",),
    ),
}


def image_uri(fal: ModuleType, color: tuple[int, int, int]) -> str:
    return str(fal.encode_image(Image.new("RGB", (96, 64), color), format="png"))


def decode(server: FramecastServer, url: str) -> tuple[int, float]:
    """(frames, frames per second) of the MP4 at `url`."""
    with server.client() as client:
        response = client.get(url)
    assert response.status_code == 200, response.text
    with av.open(io.BytesIO(response.content)) as container:
        stream = container.streams.video[0]
        return sum(1 for _ in container.decode(stream)), float(stream.average_rate or 0)


def test_every_closed_endpoint_is_mapped_here() -> None:
    assert set(CLOSED) == {spec.endpoint_id for spec in build_catalogue().values() if spec.kind == "closed"}


@pytest.mark.parametrize("endpoint_id", sorted(CLOSED))
def test_a_closed_endpoint_runs_on_its_mapped_engine(
    fal: ModuleType, server: FramecastServer, endpoint_id: str
) -> None:
    case = CLOSED[endpoint_id]
    engine, model, fps = case.engine
    colors = [(30, 120, 200), (200, 60, 20)]
    arguments = {**case.arguments, **{name: image_uri(fal, colors[i]) for i, name in enumerate(case.images)}}
    handle = fal.submit(endpoint_id, arguments=arguments)
    result = handle.get()

    # The duration, in frames at the mapped engine's own rate, playing at that rate.
    assert decode(server, result["video"]["url"]) == (round(case.seconds * fps), fps)
    metadata = result["metadata"]
    assert (metadata["engine"], metadata["served_by"]) == (engine, "mapped")
    assert metadata["model"].endswith(f"/models/tiny/{model}")
    if "seed" in case.arguments:
        assert result["seed"] == metadata["seed"] == case.arguments["seed"]

    status = fal.status(endpoint_id, handle.request_id, with_logs=True)
    warnings = [log["message"] for log in status.logs if log["level"] == "WARN"]
    for expected in case.warnings:
        assert sum(line.startswith(expected) for line in warnings) == 1, (expected, warnings)
    assert len(warnings) == len(case.warnings), warnings


def test_models_names_the_engine_and_weights_of_each_mapped_endpoint(server: FramecastServer) -> None:
    with server.client() as client:
        entries = {entry["endpoint_id"]: entry for entry in client.get("/models").json()["endpoints"]}
    for endpoint_id, case in CLOSED.items():
        engine, model, _ = case.engine
        entry = entries[endpoint_id]
        assert (entry["kind"], entry["state"], entry["engine"], entry["served_by"]) == (
            "closed",
            "ready",
            engine,
            "mapped",
        )
        assert entry["model"].endswith(f"/models/tiny/{model}")
    assert entries["fal-ai/wan-i2v"]["served_by"] == "local"
