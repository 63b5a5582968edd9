"""Wan 2.1 endpoints: image-to-video, first-last-frame, and Pro."""

from __future__ import annotations

from collections.abc import Mapping

from framecast.endpoints.sizing import video_size
from framecast.endpoints.spec import (
    EndpointSpec,
    GenerationPlan,
    ImageDimensions,
    choose_seed,
    unknown_field_notes,
    unsupported_option_note,
)
from framecast.engines.names import EngineTraits
from framecast.schemas.wan import (
    WAN_DEFAULT_NEGATIVE_PROMPT,
    WanFLF2VInput,
    WanI2VInput,
    WanI2VOutput,
    WanInputBase,
    WanProI2VInput,
    WanProI2VOutput,
)

# fal: "a 6-second 1080p video (at 30 FPS) from an image and text using an enhanced version of Wan 2.1".
WAN_PRO_RESOLUTION = "1080p"
WAN_PRO_FRAMES_PER_SECOND = 30
WAN_PRO_DURATION_S = 6
WAN_PRO_STEPS = 40


def wan_notes(request: WanInputBase) -> list[str]:
    notes = unknown_field_notes(request)
    if request.enable_prompt_expansion:
        notes.append(
            unsupported_option_note(
                "enable_prompt_expansion", True, "no prompt-expansion model is configured; the prompt is used as given"
            )
        )
    return notes


def plan_wan(request: WanInputBase, images: Mapping[str, ImageDimensions], _engine: EngineTraits) -> GenerationPlan:
    first_image = images.get("image_url") or images.get("start_image_url")
    width, height = video_size(request.resolution, request.aspect_ratio, first_image)
    return GenerationPlan(
        generation={
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "width": width,
            "height": height,
            "num_frames": request.num_frames,
            "frames_per_second": request.frames_per_second,
            "num_inference_steps": request.num_inference_steps,
            "guidance_scale": request.guide_scale,
            "shift": request.shift,
            "seed": choose_seed(request.seed),
            # "none", "regular" or "high": the engine's step cache (docs/engines.md#step-caching).
            "options": {"acceleration": request.acceleration},
        },
        notes=wan_notes(request),
    )


def plan_wan_pro(
    request: WanProI2VInput, images: Mapping[str, ImageDimensions], _engine: EngineTraits
) -> GenerationPlan:
    width, height = video_size(WAN_PRO_RESOLUTION, "auto", images.get("image_url"))
    return GenerationPlan(
        generation={
            "prompt": request.prompt,
            "negative_prompt": WAN_DEFAULT_NEGATIVE_PROMPT,
            "width": width,
            "height": height,
            "num_frames": WAN_PRO_DURATION_S * WAN_PRO_FRAMES_PER_SECOND,
            "frames_per_second": WAN_PRO_FRAMES_PER_SECOND,
            "num_inference_steps": WAN_PRO_STEPS,
            "seed": choose_seed(request.seed),
        },
        notes=unknown_field_notes(request),
    )


WAN_FLF2V_PROMPT = (
    "A tabby cat is confidely strolling toward the camera, when it spins and with a flash of magic reveals itself "
    "to be a cat-dragon hybrid with glistening amber scales."
)
WAN_EXAMPLE_SETTINGS = {
    "num_frames": 81,
    "frames_per_second": 16,
    "resolution": "720p",
    "num_inference_steps": 30,
    "guide_scale": 5,
    "shift": 5,
    "enable_safety_checker": True,
    "enable_prompt_expansion": False,
    "acceleration": "regular",
    "aspect_ratio": "auto",
}

WAN_ENDPOINTS = [
    EndpointSpec(
        endpoint_id="fal-ai/wan-i2v",
        title="Wan 2.1 image-to-video",
        kind="open",
        input_model=WanI2VInput,
        output_model=WanI2VOutput,
        image_fields={"image_url": "image"},
        plan=plan_wan,
        example={
            "prompt": "Cars racing in slow motion",
            "negative_prompt": WAN_DEFAULT_NEGATIVE_PROMPT,
            "image_url": "https://storage.googleapis.com/falserverless/gallery/car_720p.png",
            **WAN_EXAMPLE_SETTINGS,
        },
        engine_family="wan-i2v",
        description="Wan-2.1 Image-to-Video: a video from an image and a text prompt.",
    ),
    EndpointSpec(
        endpoint_id="fal-ai/wan-flf2v",
        title="Wan 2.1 first-last-frame-to-video",
        kind="open",
        input_model=WanFLF2VInput,
        output_model=WanI2VOutput,
        image_fields={"start_image_url": "image", "end_image_url": "last_image"},
        plan=plan_wan,
        example={
            "prompt": WAN_FLF2V_PROMPT,
            "negative_prompt": WAN_DEFAULT_NEGATIVE_PROMPT,
            "start_image_url": "https://storage.googleapis.com/falserverless/web-examples/wan_flf/first_frame.png",
            "end_image_url": "https://storage.googleapis.com/falserverless/web-examples/wan_flf/last_frame.png",
            **WAN_EXAMPLE_SETTINGS,
        },
        engine_family="wan-flf2v",
        description="Wan-2.1 flf2v generates dynamic videos by intelligently bridging a given first frame to a "
        "desired end frame through smooth, coherent motion sequences.",
    ),
    EndpointSpec(
        endpoint_id="fal-ai/wan-pro/image-to-video",
        title="Wan Pro image-to-video",
        kind="open",
        input_model=WanProI2VInput,
        output_model=WanProI2VOutput,
        image_fields={"image_url": "image"},
        plan=plan_wan_pro,
        example={
            "prompt": "A stylish woman walks down a Tokyo street filled with warm glowing neon and animated city "
            "signage.",
            "enable_safety_checker": True,
            "image_url": "https://fal.media/files/elephant/8kkhB12hEZI2kkbU8pZPA_test.jpeg",
        },
        engine_family="wan-pro",
        description="Generate a 6-second 1080p video (at 30 FPS) from an image and text using an enhanced version "
        "of Wan 2.1.",
    ),
]
