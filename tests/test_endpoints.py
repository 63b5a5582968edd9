from __future__ import annotations

import pytest

from framecast.endpoints import ImageDimensions, plan_wan_i2v, wan_size
from framecast.schemas.wan import WanI2VInput


@pytest.mark.parametrize(
    ("resolution", "aspect", "image", "expected"),
    [
        ("480p", "16:9", (10, 10), (832, 480)),
        ("720p", "9:16", (10, 10), (720, 1280)),
        ("720p", "1:1", (10, 10), (960, 960)),
        ("480p", "auto", (1664, 960), (832, 480)),
        ("480p", "auto", (600, 900), (512, 768)),
        ("720p", "auto", (5000, 100), (1472, 624)),
    ],
)
def test_wan_size(resolution: str, aspect: str, image: tuple[int, int], expected: tuple[int, int]) -> None:
    width, height = wan_size(resolution, aspect, ImageDimensions(*image))
    assert (width, height) == expected
    assert width % 16 == 0 and height % 16 == 0


def test_plan_fixes_a_random_seed_and_names_ignored_options() -> None:
    request = WanI2VInput.model_validate({"prompt": "p", "image_url": "data:,", "typo_field": 1})
    plan = plan_wan_i2v(request, {"image_url": ImageDimensions(100, 100)})
    assert isinstance(plan.generation["seed"], int)
    assert plan.generation["guidance_scale"] == 5.0
    assert any("typo_field" in note for note in plan.notes)
    assert any("safety checker" in note for note in plan.notes)


def test_wan_schema_defaults_follow_the_seed() -> None:
    request = WanI2VInput.model_validate({"prompt": "p", "image_url": "u"})
    assert (request.num_frames, request.frames_per_second, request.resolution) == (81, 16, "720p")
    assert (request.num_inference_steps, request.guide_scale, request.shift) == (30, 5.0, 5.0)
    assert (request.acceleration, request.aspect_ratio) == ("regular", "auto")
