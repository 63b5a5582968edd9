"""Parameter mapping: each endpoint's documented fields in engine terms."""

from __future__ import annotations

from typing import Any

import pytest

from framecast.endpoints import ImageDimensions, build_catalogue
from framecast.endpoints.spec import GenerationPlan
from framecast.engines.base import GenerationRequest

CATALOGUE = build_catalogue()
LANDSCAPE = ImageDimensions(1600, 900)
PORTRAIT = ImageDimensions(600, 1000)
GENERATION_FIELDS = set(GenerationRequest.__dataclass_fields__) - {"image", "last_image"}


def plan(endpoint_id: str, image: ImageDimensions = LANDSCAPE, **fields: Any) -> GenerationPlan:
    spec = CATALOGUE[endpoint_id]
    request = spec.input_model.model_validate({**spec.example, **fields})
    images = {name: image for name in spec.image_fields if getattr(request, name, None) is not None}
    return spec.plan(request, images)


@pytest.mark.parametrize("endpoint_id", sorted(CATALOGUE))
def test_every_plan_speaks_the_engine_request(endpoint_id: str) -> None:
    generation = plan(endpoint_id).generation
    assert set(generation) <= GENERATION_FIELDS
    assert {"prompt", "width", "height", "num_frames", "frames_per_second", "num_inference_steps", "seed"} <= set(
        generation
    )
    assert generation["width"] % 16 == 0 and generation["height"] % 16 == 0
    assert isinstance(generation["seed"], int) and generation["seed"] >= 0


SEEDED = sorted(endpoint_id for endpoint_id, spec in CATALOGUE.items() if "seed" in spec.input_model.model_fields)


@pytest.mark.parametrize("endpoint_id", SEEDED)
def test_a_given_seed_is_kept(endpoint_id: str) -> None:
    assert plan(endpoint_id, seed=1234).generation["seed"] == 1234


@pytest.mark.parametrize("endpoint_id", ["wavespeed-ai/framepack", "fal-ai/bytedance/seedance/v1/lite/image-to-video"])
def test_minus_one_means_random(endpoint_id: str) -> None:
    seeds = {plan(endpoint_id, seed=-1).generation["seed"] for _ in range(5)}
    assert all(seed >= 0 for seed in seeds) and len(seeds) > 1


def test_auto_aspect_follows_the_image_and_fixed_aspects_do_not() -> None:
    auto = plan("fal-ai/wan-i2v", PORTRAIT).generation
    assert (auto["width"], auto["height"]) == (736, 1232)
    fixed = plan("fal-ai/wan-i2v", PORTRAIT, aspect_ratio="16:9").generation
    assert (fixed["width"], fixed["height"]) == (1280, 720)
    veo = plan("fal-ai/veo2/image-to-video", ImageDimensions(1000, 1000), aspect_ratio="auto_prefer_portrait")
    assert veo.generation["height"] > veo.generation["width"]


@pytest.mark.parametrize(
    ("endpoint_id", "fields", "frames", "fps"),
    [
        ("fal-ai/veo2/image-to-video", {"duration": "8s"}, 192, 24),
        ("fal-ai/kling-video/v2.1/standard/image-to-video", {"duration": "10"}, 240, 24),
        ("fal-ai/bytedance/seedance/v1/lite/image-to-video", {"duration": "3"}, 72, 24),
        ("fal-ai/bytedance/seedance/v1/lite/image-to-video", {"duration": "3", "num_frames": 50}, 50, 24),
        ("fal-ai/luma-dream-machine/ray-2-flash/image-to-video", {"duration": "9s"}, 216, 24),
        ("fal-ai/framepack", {"num_frames": 90}, 90, 30),
        ("fal-ai/wan-i2v", {"num_frames": 97, "frames_per_second": 24}, 97, 24),
        ("fal-ai/wan-pro/image-to-video", {}, 180, 30),
        ("fal-ai/magi-distilled/image-to-video", {"num_frames": 120}, 120, 24),
        ("fal-ai/stable-video", {"fps": 10}, 25, 10),
    ],
)
def test_duration_and_frame_counts(endpoint_id: str, fields: dict[str, Any], frames: int, fps: int) -> None:
    generation = plan(endpoint_id, **fields).generation
    assert (generation["num_frames"], generation["frames_per_second"]) == (frames, fps)


def test_guidance_fields_are_mapped_by_name() -> None:
    wan = plan("fal-ai/wan-i2v", guide_scale=7.5, shift=3).generation
    assert (wan["guidance_scale"], wan["shift"]) == (7.5, 3)
    framepack = plan("fal-ai/framepack", guidance_scale=12, cfg_scale=2).generation
    assert (framepack["guidance_scale"], framepack["options"]["true_cfg_scale"]) == (12, 2)
    assert plan("fal-ai/framepack/flf2v", strength=0.3).generation["options"]["last_image_strength"] == 0.3
    kling = plan("fal-ai/kling-video/v2.1/standard/image-to-video", cfg_scale=0.5).generation
    assert kling["guidance_scale"] == pytest.approx(5.5)
    svd = plan("fal-ai/stable-video", motion_bucket_id=200, cond_aug=0.1).generation["options"]
    assert (svd["motion_bucket_id"], svd["noise_aug_strength"]) == (200, 0.1)
    assert (
        plan("fal-ai/magi-distilled/image-to-video", num_inference_steps="32").generation["num_inference_steps"] == 32
    )


def test_resolutions_become_sizes() -> None:
    assert (plan("fal-ai/framepack", resolution="480p", aspect_ratio="9:16").generation["width"]) == 480
    pixverse = plan("fal-ai/pixverse/v4.5/image-to-video", resolution="540p", aspect_ratio="1:1").generation
    assert (pixverse["width"], pixverse["height"]) == (720, 720)
    svd = plan("fal-ai/stable-video", PORTRAIT).generation
    assert (svd["width"], svd["height"]) == (576, 1024)


@pytest.mark.parametrize(
    ("endpoint_id", "fields", "option"),
    [
        ("fal-ai/wan-i2v", {"enable_prompt_expansion": True}, "enable_prompt_expansion"),
        ("fal-ai/wan-i2v", {"typo_field": 1}, "typo_field"),
        ("fal-ai/minimax/hailuo-02/pro/image-to-video", {"prompt_optimizer": True}, "prompt_optimizer"),
        ("fal-ai/bytedance/seedance/v1/lite/image-to-video", {"camera_fixed": True}, "camera_fixed"),
        ("fal-ai/pixverse/v4.5/image-to-video", {"style": "anime", "camera_movement": "zoom_in"}, "camera_movement"),
        ("fal-ai/pixverse/v4.5/image-to-video", {"style": "anime"}, "style"),
        ("fal-ai/luma-dream-machine/ray-2-flash/image-to-video", {"loop": True}, "loop"),
        ("fal-ai/kling-video/v1/standard/image-to-video", {"static_mask_url": "x"}, "static_mask_url"),
    ],
)
def test_options_that_cannot_be_honoured_are_noted(endpoint_id: str, fields: dict[str, Any], option: str) -> None:
    assert any(option in note for note in plan(endpoint_id, **fields).notes)


@pytest.mark.parametrize("enabled", [True, False])
def test_the_safety_checker_flag_travels_to_the_worker(enabled: bool) -> None:
    spec = CATALOGUE["fal-ai/framepack"]
    request = spec.input_model.model_validate({**spec.example, "enable_safety_checker": enabled})
    generation = spec.plan_generation(request, {"image_url": LANDSCAPE}).generation
    assert generation["options"]["enable_safety_checker"] is enabled
    assert generation["options"]["true_cfg_scale"] == 1  # the endpoint's own options are kept


def test_wan_acceleration_is_the_engine_cache_level() -> None:
    assert plan("fal-ai/wan-i2v", acceleration="none").generation["options"] == {"acceleration": "none"}
    assert plan("fal-ai/wan-i2v").notes == []


def test_output_seed_follows_the_documentation() -> None:
    assert CATALOGUE["fal-ai/wan-i2v"].output_has_seed
    assert not CATALOGUE["fal-ai/veo2/image-to-video"].output_has_seed
