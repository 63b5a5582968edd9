"""FramePack endpoints: fal's three and WaveSpeed's."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from framecast.endpoints.sizing import video_size
from framecast.endpoints.spec import (
    EndpointSpec,
    GenerationPlan,
    ImageDimensions,
    choose_seed,
    unknown_field_notes,
)
from framecast.engines.names import EngineTraits
from framecast.schemas.framepack import (
    FramePackFLF2VInput,
    FramePackInput,
    FramePackOutput,
    WaveSpeedFramePackInput,
)

# FramePack (HunyuanVideo) renders at 30 fps, and the reference demo samples 25 steps per section.
FRAMEPACK_FRAMES_PER_SECOND = 30
FRAMEPACK_STEPS = 25
FRAMEPACK_EXAMPLE_IMAGE = "https://storage.googleapis.com/falserverless/framepack/framepack.jpg"
FRAMEPACK_EXAMPLE_PROMPT = (
    "A mesmerising video of a deep sea jellyfish moving through an inky-black ocean. The jellyfish glows softly "
    "with an amber bioluminescence. The overall scene is lifelike."
)
FRAMEPACK_EXAMPLE = {
    "prompt": FRAMEPACK_EXAMPLE_PROMPT,
    "negative_prompt": "Ugly, blurry distorted, bad quality",
    "image_url": FRAMEPACK_EXAMPLE_IMAGE,
    "aspect_ratio": "16:9",
    "resolution": "720p",
    "cfg_scale": 1,
    "guidance_scale": 10,
    "num_frames": 180,
    "enable_safety_checker": True,
}


def plan_framepack(
    request: FramePackInput | WaveSpeedFramePackInput,
    _images: Mapping[str, ImageDimensions],
    _engine: EngineTraits,
) -> GenerationPlan:
    """fal's and WaveSpeed's FramePack inputs share their fields; only steps and true CFG differ."""
    if isinstance(request, WaveSpeedFramePackInput):
        num_inference_steps, true_cfg_scale = request.num_inference_steps, 1.0
    else:
        num_inference_steps, true_cfg_scale = FRAMEPACK_STEPS, request.cfg_scale
    options: dict[str, Any] = {"true_cfg_scale": true_cfg_scale}
    if isinstance(request, FramePackFLF2VInput):
        options["last_image_strength"] = request.strength
    width, height = video_size(request.resolution, request.aspect_ratio, None)
    generation = {
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "width": width,
        "height": height,
        "num_frames": request.num_frames,
        "frames_per_second": FRAMEPACK_FRAMES_PER_SECOND,
        "num_inference_steps": num_inference_steps,
        # fal's guidance_scale is FramePack's distilled (embedded) guidance; cfg_scale is true CFG.
        "guidance_scale": request.guidance_scale,
        "seed": choose_seed(request.seed),
        "options": options,
    }
    notes = unknown_field_notes(request)
    return GenerationPlan(generation, notes)


FRAMEPACK = EndpointSpec(
    endpoint_id="fal-ai/framepack",
    title="FramePack image-to-video",
    kind="open",
    input_model=FramePackInput,
    output_model=FramePackOutput,
    image_fields={"image_url": "image"},
    plan=plan_framepack,
    example=FRAMEPACK_EXAMPLE,
    engine_family="framepack",
    description="Framepack is an efficient Image-to-video model that autoregressively generates videos.",
)
FRAMEPACK_ENDPOINTS = [
    FRAMEPACK,
    # F1's schema is FramePack's; only the model (forward-only, vanilla sampling) differs.
    replace(
        FRAMEPACK,
        endpoint_id="fal-ai/framepack/f1",
        title="FramePack F1 image-to-video",
        engine_family="framepack-f1",
        description="FramePack F1: forward-only (vanilla) sampling, one section after another.",
    ),
    EndpointSpec(
        endpoint_id="fal-ai/framepack/flf2v",
        title="FramePack first-last-frame-to-video",
        kind="open",
        input_model=FramePackFLF2VInput,
        output_model=FramePackOutput,
        image_fields={"image_url": "image", "end_image_url": "last_image"},
        plan=plan_framepack,
        example={**FRAMEPACK_EXAMPLE, "end_image_url": FRAMEPACK_EXAMPLE_IMAGE, "num_frames": 240, "strength": 0.8},
        engine_family="framepack",
        description="FramePack from a first frame to a last frame.",
    ),
    EndpointSpec(
        endpoint_id="wavespeed-ai/framepack",
        title="FramePack (WaveSpeed)",
        kind="open",
        input_model=WaveSpeedFramePackInput,
        output_model=FramePackOutput,
        image_fields={"image": "image"},
        plan=plan_framepack,
        example={
            "image": "https://d3gnftk2yhz9lr.wavespeed.ai/media/images/1745337597019716935_RS1XUQMI.jpg",
            "prompt": "A fierce female warrior swings a long sword with full strength. Her expression is intense "
            "and focused, and her long hair flows dramatically through the air with the force of her movement",
            "negative_prompt": "",
            "aspect_ratio": "16:9",
            "resolution": "720p",
            "seed": 0,
            "num_inference_steps": 25,
            "num_frames": 180,
            "guidance_scale": 10,
            "enable_safety_checker": True,
        },
        engine_family="framepack",
        description="Framepack is an efficient Image-to-video model that autoregressively generates videos.",
    ),
]
