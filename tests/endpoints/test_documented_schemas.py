"""Every endpoint's published schema against the documented tables (protocol.md §6, the seed pages).

The tables are written out here by hand from the documentation, independently of
the code, and compared with the JSON schema the server publishes.
"""

from __future__ import annotations

from typing import Any

import pytest

from framecast.api.openapi import endpoint_schemas
from framecast.endpoints import build_catalogue

WAN_DEFAULTS = {
    "num_frames": 81,
    "frames_per_second": 16,
    "resolution": "720p",
    "num_inference_steps": 30,
    "guide_scale": 5,
    "shift": 5,
    "enable_prompt_expansion": False,
    "acceleration": "regular",
    "aspect_ratio": "auto",
}
WAN_ENUMS = {
    "resolution": ["480p", "720p"],
    "acceleration": ["none", "regular"],
    "aspect_ratio": ["auto", "16:9", "9:16", "1:1"],
}
FRAMEPACK_DEFAULTS = {
    "negative_prompt": "",
    "aspect_ratio": "16:9",
    "resolution": "720p",
    "cfg_scale": 1,
    "guidance_scale": 10,
    "num_frames": 180,
}
FRAMEPACK_ENUMS = {"aspect_ratio": ["16:9", "9:16"], "resolution": ["720p", "480p"]}
KLING_DEFAULTS = {"duration": "5", "negative_prompt": "blur, distort, and low quality", "cfg_scale": 0.5}
KLING_REQUIRED = {"prompt", "image_url"}
PIXVERSE_DEFAULTS = {"aspect_ratio": "16:9", "resolution": "720p", "duration": "5", "negative_prompt": ""}
PIXVERSE_ENUMS = {
    "aspect_ratio": ["16:9", "4:3", "1:1", "3:4", "9:16"],
    "resolution": ["360p", "540p", "720p", "1080p"],
    "duration": ["5", "8"],
    "style": ["anime", "3d_animation", "clay", "comic", "cyberpunk"],
}

# endpoint -> (required fields, defaults, enums, output fields that are required)
DOCUMENTED: dict[str, tuple[set[str], dict[str, Any], dict[str, list[str]], set[str]]] = {
    "fal-ai/framepack": ({"prompt", "image_url"}, FRAMEPACK_DEFAULTS, FRAMEPACK_ENUMS, {"video", "seed"}),
    "fal-ai/framepack/f1": ({"prompt", "image_url"}, FRAMEPACK_DEFAULTS, FRAMEPACK_ENUMS, {"video", "seed"}),
    "fal-ai/framepack/flf2v": (
        {"prompt", "image_url", "end_image_url"},
        {**FRAMEPACK_DEFAULTS, "num_frames": 240, "strength": 0.8},
        FRAMEPACK_ENUMS,
        {"video", "seed"},
    ),
    "wavespeed-ai/framepack": (
        {"image", "prompt"},
        {
            "aspect_ratio": "16:9",
            "resolution": "720p",
            "num_inference_steps": 25,
            "num_frames": 180,
            "guidance_scale": 10,
            "enable_safety_checker": True,
        },
        {},
        {"video", "seed"},
    ),
    "fal-ai/stable-video": (
        {"image_url"},
        {"motion_bucket_id": 127, "cond_aug": 0.02, "fps": 25},
        {},
        {"video", "seed"},
    ),
    "fal-ai/wan-i2v": ({"prompt", "image_url"}, WAN_DEFAULTS, WAN_ENUMS, {"video", "seed"}),
    "fal-ai/wan-flf2v": ({"prompt", "start_image_url", "end_image_url"}, WAN_DEFAULTS, WAN_ENUMS, {"video", "seed"}),
    "fal-ai/wan-pro/image-to-video": ({"prompt", "image_url"}, {"enable_safety_checker": True}, {}, {"video"}),
    "fal-ai/magi-distilled/image-to-video": (
        {"prompt", "image_url"},
        {
            "num_frames": 96,
            "resolution": "720p",
            "num_inference_steps": "16",
            "enable_safety_checker": True,
            "aspect_ratio": "auto",
        },
        {"resolution": ["480p", "720p"], "aspect_ratio": ["auto", "16:9", "9:16", "1:1"]},
        {"video", "seed"},
    ),
    "fal-ai/veo2/image-to-video": (
        {"prompt", "image_url"},
        {"aspect_ratio": "auto", "duration": "5s"},
        {"aspect_ratio": ["auto", "auto_prefer_portrait", "16:9", "9:16"], "duration": ["5s", "6s", "7s", "8s"]},
        {"video"},
    ),
    "fal-ai/kling-video/v2.1/standard/image-to-video": (
        KLING_REQUIRED,
        KLING_DEFAULTS,
        {"duration": ["5", "10"]},
        {"video"},
    ),
    "fal-ai/kling-video/v2.1/master/image-to-video": (
        KLING_REQUIRED,
        KLING_DEFAULTS,
        {"duration": ["5", "10"]},
        {"video"},
    ),
    "fal-ai/kling-video/v2/master/image-to-video": (
        KLING_REQUIRED,
        KLING_DEFAULTS,
        {"duration": ["5", "10"]},
        {"video"},
    ),
    "fal-ai/kling-video/v2.1/pro/image-to-video": (
        KLING_REQUIRED,
        KLING_DEFAULTS,
        {"duration": ["5", "10"]},
        {"video"},
    ),
    "fal-ai/kling-video/v1.6/pro/image-to-video": (
        KLING_REQUIRED,
        {**KLING_DEFAULTS, "aspect_ratio": "16:9"},
        {"aspect_ratio": ["16:9", "9:16", "1:1"]},
        {"video"},
    ),
    "fal-ai/kling-video/v1.5/pro/image-to-video": (
        KLING_REQUIRED,
        {**KLING_DEFAULTS, "aspect_ratio": "16:9"},
        {"aspect_ratio": ["16:9", "9:16", "1:1"]},
        {"video"},
    ),
    "fal-ai/kling-video/v1/standard/image-to-video": (KLING_REQUIRED, KLING_DEFAULTS, {}, {"video"}),
    "fal-ai/bytedance/seedance/v1/lite/image-to-video": (
        {"prompt", "image_url"},
        {"resolution": "720p", "duration": "5", "aspect_ratio": "auto", "enable_safety_checker": True},
        {
            "resolution": ["480p", "720p", "1080p"],
            "aspect_ratio": ["21:9", "16:9", "4:3", "1:1", "3:4", "9:16", "auto"],
        },
        {"video", "seed"},
    ),
    "fal-ai/minimax/hailuo-02/pro/image-to-video": ({"prompt", "image_url"}, {"prompt_optimizer": True}, {}, {"video"}),
    "fal-ai/pixverse/v4.5/image-to-video": ({"prompt", "image_url"}, PIXVERSE_DEFAULTS, PIXVERSE_ENUMS, {"video"}),
    "fal-ai/pixverse/v4.5/transition": ({"prompt", "first_image_url"}, PIXVERSE_DEFAULTS, PIXVERSE_ENUMS, {"video"}),
    "fal-ai/luma-dream-machine/ray-2-flash/image-to-video": (
        {"prompt"},
        {"aspect_ratio": "16:9", "resolution": "540p", "duration": "5s"},
        {"aspect_ratio": ["16:9", "9:16", "4:3", "3:4", "21:9", "9:21"], "resolution": ["540p", "720p", "1080p"]},
        {"video"},
    ),
}
IMAGE_FIELDS = {
    "fal-ai/framepack/flf2v": {"image_url", "end_image_url"},
    "fal-ai/wan-flf2v": {"start_image_url", "end_image_url"},
    "fal-ai/kling-video/v1.6/pro/image-to-video": {"image_url", "tail_image_url"},
    "fal-ai/kling-video/v1.5/pro/image-to-video": {"image_url", "tail_image_url"},
    "fal-ai/kling-video/v1/standard/image-to-video": {"image_url", "tail_image_url"},
    "fal-ai/pixverse/v4.5/transition": {"first_image_url", "last_image_url", "end_image_url"},
    "fal-ai/bytedance/seedance/v1/lite/image-to-video": {"image_url", "end_image_url"},
    "fal-ai/minimax/hailuo-02/pro/image-to-video": {"image_url", "end_image_url"},
    "fal-ai/luma-dream-machine/ray-2-flash/image-to-video": {"image_url", "end_image_url"},
    "wavespeed-ai/framepack": {"image"},
}
CATALOGUE = build_catalogue()


def test_every_documented_endpoint_is_served_and_nothing_else() -> None:
    assert set(CATALOGUE) == set(DOCUMENTED)


def enum_of(schema: dict[str, Any], components: dict[str, Any]) -> list[Any] | None:
    for option in schema.get("anyOf", [schema]):
        if "$ref" in option:
            option = components[option["$ref"].rsplit("/", 1)[1]]
        if "enum" in option:
            return list(option["enum"])
    return None


@pytest.mark.parametrize("endpoint_id", sorted(DOCUMENTED))
def test_published_schema_matches_the_documentation(endpoint_id: str) -> None:
    required, defaults, enums, output_required = DOCUMENTED[endpoint_id]
    input_name, output_name, components = endpoint_schemas(CATALOGUE[endpoint_id])
    schema = components[input_name]
    properties = schema["properties"]

    assert set(schema.get("required", [])) == required
    for name, default in defaults.items():
        assert properties[name]["default"] == default, name
    for name, values in enums.items():
        assert enum_of(properties[name], components) == values, name
    for name, field in properties.items():
        assert field.get("description"), f"{name} has no description"
    assert set(components[output_name]["required"]) == output_required
    assert "metadata" in components[output_name]["properties"], "the engine is never hidden"


@pytest.mark.parametrize("endpoint_id", sorted(DOCUMENTED))
def test_image_fields_are_the_documented_url_fields(endpoint_id: str) -> None:
    spec = CATALOGUE[endpoint_id]
    expected = IMAGE_FIELDS.get(endpoint_id, {"image_url"})
    assert set(spec.image_fields) == expected
    assert set(spec.image_fields.values()) <= {"image", "last_image"}
    assert "image" in spec.image_fields.values()


@pytest.mark.parametrize("endpoint_id", sorted(DOCUMENTED))
def test_the_documented_example_is_accepted_as_it_stands(endpoint_id: str) -> None:
    spec = CATALOGUE[endpoint_id]
    request = spec.input_model.model_validate(spec.example)
    assert not request.model_extra, "the example uses only documented fields"
